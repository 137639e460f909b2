"""The quantization matrix, read from the registries: every cell the suite builds, and what each is scored on.

A cell is (model, backend, dtype, calibrator, granularity); which values a backend supports is its own
declaration (``ptq_core/backends``). An evaluation is a cell on one runtime that takes its format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ptq_core.backends import BACKENDS, Backend, get_backend
from ptq_core.errors import PTQError
from ptq_core.formats import FORMATS
from ptq_core.models import DEFAULT_MODEL, MODELS, Model, get_model
from ptq_core.runtimes import Runtime, runtimes_for


@dataclass(frozen=True)
class Cell:
    """``Cell("onnxruntime", "u8s8")``; calibrator and granularity default to the backend's first."""

    backend: str
    dtype: str = ""
    calibrator: str = ""
    granularity: str = ""
    model: str = DEFAULT_MODEL

    def __post_init__(self) -> None:
        b = get_backend(self.backend)
        get_model(self.model)
        for axis, allowed in (
            ("dtype", tuple(b.dtypes)),
            ("calibrator", b.calibrators),
            ("granularity", b.granularities),
        ):
            value = getattr(self, axis) or allowed[0]
            if value not in allowed:
                raise PTQError(f"unknown {self.backend} {axis} {value!r}: choose one of {', '.join(allowed)}")
            object.__setattr__(self, axis, value)

    @property
    def id(self) -> str:
        return f"{self.model}-{self.backend}-{self.dtype}-{self.calibrator}-{self.granularity}"

    @property
    def backend_spec(self) -> Backend:
        return BACKENDS[self.backend]

    @property
    def model_spec(self) -> Model:
        return MODELS[self.model]

    @property
    def artifact_name(self) -> str:
        return self.id + FORMATS[self.backend_spec.format].suffix

    @property
    def runtimes(self) -> tuple[Runtime, ...]:
        """The runtimes its artifact is scored on in the suite (the checked ones)."""
        return runtimes_for(self.backend_spec.format, checked_only=True)

    def replace(self, **changes: str) -> Cell:
        return dataclasses.replace(self, **changes)


def cells_of(backend: Backend, model: str = DEFAULT_MODEL) -> tuple[Cell, ...]:
    return tuple(
        Cell(backend.name, d, c, g, model)
        for d in backend.dtypes
        for c in backend.calibrators
        for g in backend.granularities
    )


# Which cells of a model's full matrix the suite runs (absent: all of them).
# MobileNetV1: what its depthwise convs stress is weight granularity, so each backend's default dtype and
# calibrator at every granularity (5 cells); the dtype and calibrator axes are ResNet8's story, and the
# whole matrix again would double the suite's build time.
MODEL_SUBSETS: dict[str, Callable[[Cell], bool]] = {
    "mobilenetv1": lambda c: (
        (c.dtype, c.calibrator) == (next(iter(c.backend_spec.dtypes)), c.backend_spec.calibrators[0])
    ),
}

CELLS: tuple[Cell, ...] = tuple(
    cell
    for model in MODELS
    for b in BACKENDS.values()
    for cell in cells_of(b, model)
    if MODEL_SUBSETS.get(model, lambda c: True)(cell)
)
DEFAULT_CELLS: tuple[Cell, ...] = tuple(
    cell
    for cell in (Cell(b.name, d, model=model) for model in MODELS for b in BACKENDS.values() for d in b.dtypes)
    if cell in CELLS
)
