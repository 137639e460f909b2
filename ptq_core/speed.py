"""Inference speed: MACs counted from the model, ORT sessions and Inductor compilation as the benchmarks use
them, and a paired timer for speed ratios on a noisy machine.

Nothing here builds an artifact (``cache.code_digest`` does not cover this module).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ORT_LEVELS = ("disable", "basic", "extended", "all")
# The message torch 2.13 raises when Inductor's freezing passes prepack a conv whose activations are int8:
# oneDNN's x86 quantized conv only takes uint8 (or fp8) inputs.
SIGNED_ACTIVATIONS_ERROR = "Input tensor should have uint8"


def count_macs(module: Any) -> int:
    """Multiply-accumulates per image (convolutions and matmuls), counted by torch on one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ptq_core.resnet8 import INPUT_SHAPE

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros((1, *INPUT_SHAPE)))
    return int(counter.get_total_flops()) // 2  # torch counts a multiply-accumulate as 2 flops


def ort_session(path: Path | str, threads: int, level: str = "all", config: Mapping[str, str] | None = None) -> Any:
    """A CPU ``InferenceSession`` with exactly ``threads`` intra-op threads, graph optimisation ``level`` and
    session config entries ``config`` (e.g. ``{"session.qdqisint8allowed": "1"}``)."""
    import onnxruntime as ort

    levels = dict(
        zip(
            ORT_LEVELS,
            (
                ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            ),
            strict=True,
        )
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = levels[level]
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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


def per_call_seconds(fn: Callable[[], object], target_s: float) -> tuple[int, float]:
    """How many calls of ``fn`` fill about ``target_s`` seconds, after one warm-up call."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, round(target_s / once)), once


class PairedTimer:
    """Times several callables in interleaved rounds, so that load from other processes hits them alike.

    Each call of :meth:`round` runs every callable ``calls[name]`` times (about ``segment_s`` seconds each),
    in an order that rotates from round to round, and records the seconds per call. A speed ratio is the
    median over rounds of the per-round ratio; each rate is the median over rounds.
    """

    def __init__(self, fns: Mapping[str, Callable[[], object]], segment_s: float = 0.1) -> None:
        self.fns = dict(fns)
        self.calls = {name: per_call_seconds(fn, segment_s)[0] for name, fn in self.fns.items()}
        self.seconds: dict[str, list[float]] = {name: [] for name in self.fns}
        self._rounds = 0
        self.last: dict[str, object] = {}

    def round(self) -> dict[str, object]:
        names = list(self.fns)
        shift = self._rounds % len(names)
        for name in names[shift:] + names[:shift]:
            fn, calls = self.fns[name], self.calls[name]
            start = time.perf_counter()
            for _ in range(calls):
                out = fn()
            self.seconds[name].append((time.perf_counter() - start) / calls)
            self.last[name] = out
        self._rounds += 1
        return self.last

    def median_seconds(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def speedup(self, name: str, over: str) -> float:
        """How many times faster ``name`` ran than ``over``: median of the per-round time ratios."""
        return statistics.median(b / a for a, b in zip(self.seconds[name], self.seconds[over], strict=True))


def float_images(images: np.ndarray) -> np.ndarray:
    """Test images as the models take them (float32 NHWC raw pixels), converted outside any timed region."""
    return np.ascontiguousarray(images, dtype=np.float32)
