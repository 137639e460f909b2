"""Artifact formats: how an FP32 model is written in a format, and what an artifact in it really holds.

Accuracy cannot prove a model is quantized, nor file size that it is 8-bit: each format's ``inspect``
reads the graph (which weight ops take a dequantized 8-bit tensor) and the stored dtypes, and reports
them in the same terms, :class:`Inspection`, for every format.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptq_core.errors import PTQError


@dataclass(frozen=True)
class Inspection:
    weight_ops: int  # Conv/Gemm (ONNX) or conv2d/linear (torch.export) nodes
    quantized_weight_ops: int  # ... whose weight is a dequantize of a stored 8-bit tensor
    activations_quantized: bool  # every such op reads a dequantized activation
    weight_dtypes: tuple[str, ...]  # stored dtypes of the quantized weights
    activation_dtypes: tuple[str, ...]  # dtypes the activations are quantized to
    weight_granularities: tuple[str, ...]  # "per_channel" / "per_tensor", over every quantized weight
    payload_bytes: int  # 8-bit weights with their scales and zero points
    float_weight_bytes: int  # weights of weight ops still stored as float (an FP32 model: all of them)
    file_bytes: int
    activation_scales: dict[str, float] = field(default_factory=dict)  # quantized activation -> scale


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    module: str  # ptq_core.formats.<module>: export(module, out, model), inspect(path), load(path)
    libraries: tuple[str, ...]  # the libraries that write its FP32 files

    def _impl(self) -> Any:
        return importlib.import_module(f"ptq_core.formats.{self.module}")

    @property
    def export(self) -> Callable[..., None]:
        fn: Callable[..., None] = self._impl().export
        return fn

    def inspect(self, path: Path) -> Inspection:
        result: Inspection = self._impl().inspect(Path(path))
        return result


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", "onnx", ("torch", "onnxscript", "onnx")),
        Format("pt2", ".pt2", "pt2", ("torch",)),
    )
}


def format_of(path: Path | str) -> Format:
    suffix = Path(path).suffix
    for fmt in FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    known = ", ".join(f"{f.suffix} ({f.name})" for f in FORMATS.values())
    raise PTQError(f"{path}: unknown model file kind {suffix!r}; the suite reads {known}")
