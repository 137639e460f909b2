"""The quantization matrix, declared once: every cell the suite builds, and the cells known to fail."""

from __future__ import annotations

from dataclasses import dataclass

from ptq_core.errors import PTQError

GRANULARITIES = ("per_channel", "per_tensor")
# dtype names: activations/weights. int8 = S8S8, uint8 = U8U8 (ORT) or U8S8 (PyTorch x86), u8s8 = U8S8.
DTYPES = {
    "onnxruntime": ("int8", "uint8", "u8s8"),
    "pytorch": ("uint8", "int8"),
}
CALIBRATORS = {
    "onnxruntime": ("minmax", "entropy", "percentile", "distribution"),
    "pytorch": ("minmax", "histogram", "moving_average", "percentile"),
}
FRAMEWORKS = tuple(DTYPES)
EXTENSIONS = {"onnxruntime": ".onnx", "pytorch": ".pt"}
DEFAULT_CALIBRATOR = "minmax"
DEFAULT_GRANULARITY = "per_channel"


@dataclass(frozen=True)
class Cell:
    framework: str
    dtype: str
    calibrator: str = DEFAULT_CALIBRATOR
    granularity: str = DEFAULT_GRANULARITY

    def __post_init__(self) -> None:
        _check("framework", self.framework, FRAMEWORKS)
        _check(f"{self.framework} dtype", self.dtype, DTYPES[self.framework])
        _check(f"{self.framework} calibrator", self.calibrator, CALIBRATORS[self.framework])
        _check("granularity", self.granularity, GRANULARITIES)

    @property
    def id(self) -> str:
        return f"{self.framework}-{self.dtype}-{self.calibrator}-{self.granularity}"

    @property
    def artifact_name(self) -> str:
        """``resnet8_int8.onnx`` for a default cell; non-default axes are appended (``resnet8_int8_entropy.onnx``)."""
        parts = ["resnet8", self.dtype]
        if self.calibrator != DEFAULT_CALIBRATOR:
            parts.append(self.calibrator)
        if self.granularity != DEFAULT_GRANULARITY:
            parts.append(self.granularity)
        return "_".join(parts) + EXTENSIONS[self.framework]


def _check(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PTQError(f"unknown {what} {value!r}: choose one of {', '.join(allowed)}")


CELLS: tuple[Cell, ...] = tuple(
    Cell(framework, dtype, calibrator, granularity)
    for framework in FRAMEWORKS
    for dtype in DTYPES[framework]
    for calibrator in CALIBRATORS[framework]
    for granularity in GRANULARITIES
)

# cell id -> measured reason. The cell's accuracy checks become xfail(strict=True), so the suite
# notices the day a library changes it; every other check still runs on the cell.
_DISTRIBUTION = (
    "ORT's Distribution calibrator (meant for float8) gives ReLU outputs symmetric +-max|x| ranges, "
    "yet QDQ still removes the ReLUs: measured {} % (onnxruntime 1.32)"
)
EXPECTED_FAILURES: dict[str, str] = {
    "onnxruntime-int8-distribution-per_channel": _DISTRIBUTION.format("10.05"),
    "onnxruntime-int8-distribution-per_tensor": _DISTRIBUTION.format("10.03"),
    "onnxruntime-uint8-distribution-per_channel": _DISTRIBUTION.format("10.03"),
    "onnxruntime-uint8-distribution-per_tensor": _DISTRIBUTION.format("10.03"),
    "onnxruntime-u8s8-distribution-per_channel": _DISTRIBUTION.format("10.05"),
    "onnxruntime-u8s8-distribution-per_tensor": _DISTRIBUTION.format("10.03"),
}


# The file on disk is only >= 2x smaller for PT2E: torch.export stores ~70 KB of graph JSON beside the
# ~80 KB of int8 weights, more than the FP32 graph needs (q/dq nodes). ONNX's graph is small.
MIN_FILE_RATIO = {"onnxruntime": 3.0, "pytorch": 2.0}
MIN_PAYLOAD_RATIO = 3.8
MAX_ACCURACY_DROP_POINTS = 3.0
MAX_CLASS_DROP_POINTS = 10.0


def pytest_params(cells: tuple[Cell, ...] = CELLS, expect_accuracy: bool = False) -> list:  # type: ignore[type-arg]
    """``cells`` as pytest params with their ids; with ``expect_accuracy`` the known failures are xfail(strict)."""
    import pytest

    def marks(cell: Cell) -> list:  # type: ignore[type-arg]
        reason = EXPECTED_FAILURES.get(cell.id) if expect_accuracy else None
        return [pytest.mark.xfail(reason=reason, strict=True)] if reason else []

    return [pytest.param(cell, id=cell.id, marks=marks(cell)) for cell in cells]
