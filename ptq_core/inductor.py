"""Inductor, as the suite deploys a .pt2: ``torch.compile`` with static shapes and freezing (oneDNN int8 kernels)."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

# The message torch 2.13 raises when Inductor's freezing passes prepack a conv whose activations are int8:
# oneDNN's x86 quantized conv only takes uint8 (or fp8) inputs.
SIGNED_ACTIVATIONS_ERROR = "Input tensor should have uint8"


def inductor(path: Path) -> Any:
    """The .pt2 program under ``torch.compile`` with static shapes, one per program and process: each shape is
    compiled once (:func:`compile_for`) and every later caller of that shape reuses it."""
    from ptq_core.formats import pt2

    return _compiled(pt2.load(path))


@functools.lru_cache(maxsize=8)
def _compiled(program: Any) -> Any:
    import torch

    return torch.compile(program.module(), dynamic=False)


def compile_for(compiled: Any, example: Any) -> float:
    """Compile ``compiled`` (a ``torch.compile`` wrapper) for ``example``'s shape; the seconds it took.

    Inductor's freezing turns the PT2E q/dq pattern into oneDNN int8 kernels (x86); without it the
    quantized graph runs as float ops. Freezing only applies under ``no_grad``, which is how every
    caller runs the model afterwards (a call with gradients would recompile).
    """
    import torch

    start = time.perf_counter()
    with torch._inductor.config.patch(freezing=True), torch.no_grad():
        compiled(example)
    return time.perf_counter() - start
