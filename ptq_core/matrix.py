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

# cell id -> measured reason. Each becomes xfail(strict=True), so the suite notices when it changes.
EXPECTED_FAILURES: dict[str, str] = {}


def cell_id(cell: Cell) -> str:
    return cell.id


def default_cell(framework: str, dtype: str) -> Cell:
    return Cell(framework, dtype)
