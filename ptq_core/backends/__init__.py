"""The backend registry: every quantizer the suite measures, declared once.

A backend module ``ptq_core/backends/<name>.py`` defines ``BACKEND = Backend(...)`` and a
``quantize(inputs, cell, out)``; listing its name in ``BACKEND_MODULES`` registers it. Everything else
(cells, cache keys, baselines, checks, the report, the CLI, the terminal summary) reads the declaration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

    @property
    def module(self) -> Any:
        return importlib.import_module(f"ptq_core.backends.{self.name}")

    def quantize(self, inputs: BuildInputs, cell: Any, out: Path) -> None:
        self.module.quantize(inputs, cell, out)


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
