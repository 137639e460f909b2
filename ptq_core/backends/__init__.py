"""The backend registry: every quantizer the suite measures, declared once.

A backend module ``ptq_core/backends/<name>.py`` defines ``BACKEND = Backend(...)`` and a
``quantize(inputs, cell, out)``; listing its name in ``BACKEND_MODULES`` registers it. Everything else
(cells, cache keys, baselines, checks, the report, the CLI, the terminal summary, ``ptq tune``'s search) reads
the declaration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError

BACKEND_MODULES = ("onnxruntime", "pytorch", "nncf")


@dataclass(frozen=True)
class Stored:
    """What a dtype name means: the dtypes activations may be quantized to, and the weights' dtype."""

    activations: tuple[str, ...]
    weights: str


@dataclass(frozen=True)
class BuildInputs:
    fp32: Path  # the FP32 model in the backend's source format
    module: Callable[[], Any]  # -> the FP32 torch.nn.Module
    images: np.ndarray  # calibration images, in the layout and dtype the model takes
    shared: Callable[[str, Callable[[Path], None]], Path]  # build-once of an intermediate several cells share


@dataclass(frozen=True)
class MixedPrecision:
    """How ``ptq tune`` leaves a backend's most sensitive layers in float (``quantize``'s ``float_layers``)."""

    dtype: str  # the cell it starts from: this dtype at the backend's default calibrator and granularity
    ranking_runtime: str  # where each build with one layer in float is scored to rank the layers
    layers: Callable[[BuildInputs], tuple[str, ...]]  # the conv/linear layers it may leave, as quantize names them


@dataclass(frozen=True)
class Backend:
    name: str
    source: str  # the FP32 format it quantizes ("onnx", "pt2") ...
    format: str  # ... and the format it writes
    dtypes: Mapping[str, Stored]  # the first is the default
    calibrators: tuple[str, ...]  # the first is the default
    granularities: tuple[str, ...]  # the first is the default
    libraries: tuple[str, ...]  # whose versions key its artifacts and its baselines
    min_file_ratio: float  # FP32 file / 8-bit file; the derivation sits beside each declaration
    twin: Callable[[Any], Any] | None = None  # cell -> the onnxruntime cell it is compared with
    mixed_precision: MixedPrecision | None = None  # None: ptq tune leaves no layer of it in float
    # ptq tune's other settings of a calibrator, searched beside the cell's own (``quantize``'s calibrator_options)
    calibrator_variants: Mapping[str, tuple[Mapping[str, object], ...]] = field(default_factory=dict)

    @property
    def module(self) -> Any:
        return importlib.import_module(f"ptq_core.backends.{self.name}")

    def quantize(
        self,
        inputs: BuildInputs,
        cell: Any,
        out: Path,
        float_layers: tuple[str, ...] = (),
        calibrator_options: Mapping[str, object] | None = None,
    ) -> None:
        """The cell's artifact at ``out``; ``float_layers`` (see ``mixed_precision``) stay in float, and
        ``calibrator_options`` (one of ``calibrator_variants``) replace the calibrator's settings. A backend
        declaring neither takes ``quantize(inputs, cell, out)`` only: the keywords go only when given."""
        variant: dict[str, Any] = {}
        if float_layers:
            variant["float_layers"] = float_layers
        if calibrator_options:
            variant["calibrator_options"] = calibrator_options
        self.module.quantize(inputs, cell, out, **variant)


def _load() -> dict[str, Backend]:
    backends = {}
    for name in BACKEND_MODULES:
        backend: Backend = importlib.import_module(f"ptq_core.backends.{name}").BACKEND
        assert backend.name == name, f"ptq_core/backends/{name}.py declares {backend.name!r}"
        backends[name] = backend
    return backends


BACKENDS: dict[str, Backend] = _load()


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise PTQError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}") from None
