"""Checks as a library: ``check_<property>(ctx)`` functions that hold for every quantized artifact.

Each check declares which cells it applies to (by their properties) and whether it runs once per
artifact or once per runtime; the cells it is known to fail on are in ``ptq_core.known_failures``.
The suite and a user's pytest run parametrize them (``ptq_core.pytest_plugin.checks``); ``run_checks`` runs
them anywhere. A failed check raises :class:`CheckFailed` with a message that names the cell and what it
measured.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ptq_core.eval import BATCH_SIZE, EvalResult
from ptq_core.evaluation import EvaluationFailed
from ptq_core.formats import Inspection
from ptq_core.inspections import inspection_of, openvino_layers
from ptq_core.known_failures import known_failure
from ptq_core.matrix import CELLS, Cell

MAX_ACCURACY_DROP_POINTS = 3.0
MAX_CLASS_DROP_POINTS = 10.0
# 8-bit weights are 4x smaller than FP32 ones; their scales and zero points cost the rest. ResNet8
# per-channel: 3.86-3.91x measured (one float scale per output channel of 78 k weights), so 3.8x
# holds for any model whose layers have a few dozen input values per output channel.
MIN_PAYLOAD_RATIO = 3.8


class CheckFailed(AssertionError):
    pass


@dataclass
class Context:
    """What the checks read about one artifact; expensive parts are computed on first use."""

    cell: Cell
    artifact: Path
    fp32: Path  # the FP32 model in the same format
    evaluate: Callable[[Path, str], EvalResult]  # (model file, runtime) -> result on the scoring images
    calibration: Any  # the CalibrationSet the cell was calibrated on
    record: dict[str, Any]  # the key the artifact was built under
    sibling: Callable[[Cell], Path] | None = None  # another cell's artifact, same calibration
    runtime: str | None = None
    max_drop: float = MAX_ACCURACY_DROP_POINTS
    cache_dir: Path | None = None  # where inspections are cached (the store's models folder); None: read afresh
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, store: Any, cell: Cell, max_drop: float = MAX_ACCURACY_DROP_POINTS) -> Context:
        """The context of ``cell`` in an artifact store (the suite's ``Workspace``, a user's ``UserStore``): its
        artifact built once, scored on the store's test images with cached predictions."""
        from ptq_core.cache import built_key
        from ptq_core.predictions import result_on_test

        artifact = store.quantized(cell)
        return cls(
            cell=cell,
            artifact=artifact,
            fp32=store.fp32(cell.backend_spec.format, cell.model),
            evaluate=lambda path, runtime: result_on_test(store, path, runtime, cell.model),
            calibration=store.calibration(model=cell.model),
            record=built_key(artifact),
            sibling=store.quantized,
            max_drop=max_drop,
            cache_dir=store.models_dir,
        )

    def on(self, runtime: str) -> Context:
        return Context(**{**self.__dict__, "runtime": runtime, "_cache": self._cache})

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def inspected(self, path: Path) -> Inspection:
        return inspection_of(path, self.cache_dir)

    @property
    def inspection(self) -> Inspection:
        return self._once("inspection", lambda: self.inspected(self.artifact))  # type: ignore[no-any-return]

    @property
    def fp32_inspection(self) -> Inspection:
        return self._once("fp32_inspection", lambda: self.inspected(self.fp32))  # type: ignore[no-any-return]

    def result(self, fp32: bool = False) -> EvalResult:
        """The cell's (or FP32's) result on this runtime; a failed evaluation fails the check with its reason."""
        assert self.runtime, "a per-runtime check needs ctx.on(runtime)"
        path, runtime = (self.fp32 if fp32 else self.artifact), self.runtime
        try:
            return self._once(f"result of {path} on {runtime}", lambda: self.evaluate(path, runtime))  # type: ignore[no-any-return]
        except EvaluationFailed as exc:
            raise CheckFailed(f"{self.cell.id} on {self.runtime}: {'FP32 ' if fp32 else ''}{exc}") from exc


def _fail(ctx: Context, message: str) -> NoReturn:
    where = f"{ctx.cell.id} on {ctx.runtime}" if ctx.runtime else ctx.cell.id
    raise CheckFailed(f"{where}: {message}")


def check_output_shape(ctx: Context) -> None:
    """The load that scored the test images answered (N, classes) for a batch of 1 and a full one (64); float
    probabilities if FP32 answers them."""
    result, classes = ctx.result(), ctx.cell.model_spec.num_classes
    for batch in (1, min(BATCH_SIZE, result.total)):
        shape = result.shapes.get(batch)
        if shape != (batch, classes):
            _fail(ctx, f"batch of {batch} gave scores of shape {shape}, not ({batch}, {classes})")
    worst = result.row_sum_error
    if ctx.result(fp32=True).row_sum_error <= 1e-5:  # FP32 returns float probabilities: so must the 8-bit model
        if not worst <= 1e-5:
            _fail(ctx, f"rows of probabilities sum to 1 +- {worst:.4f}, not float probabilities (+- 1e-5)")


def check_calibration_stratified(ctx: Context) -> None:
    """The artifact was built from this cell's calibration set, which has every class equally (+-1)."""
    import hashlib
    from dataclasses import asdict

    calib = ctx.calibration
    if ctx.record.get("calibration") != asdict(calib.config):
        _fail(ctx, f"built with calibration {ctx.record.get('calibration')}, not {asdict(calib.config)}")
    if ctx.record.get("calibration_sha256") != hashlib.sha256(calib.images.tobytes()).hexdigest():
        _fail(ctx, "built from other calibration images than its calibration set")
    counts = np.unique(calib.labels, return_counts=True)[1]
    if counts.max() - counts.min() > 1 or len(calib.labels) != calib.config.num_samples:
        _fail(ctx, f"calibration set of {len(calib.labels)} images is not stratified: per-class {counts.tolist()}")


def check_weights_are_8bit(ctx: Context) -> None:
    """Every conv/linear takes a dequantized 8-bit weight and a quantized activation."""
    found = ctx.inspection
    if found.weight_ops == 0 or found.quantized_weight_ops != found.weight_ops:
        _fail(ctx, f"only {found.quantized_weight_ops} of {found.weight_ops} conv/linear ops take 8-bit weights")
    if not found.activations_quantized:
        _fail(ctx, "some conv/linear input is not a quantized activation")


def check_runs_8bit_on_openvino(ctx: Context) -> None:
    """OpenVINO (the ``openvino`` runtime's compile) runs every conv/linear in 8 bits: stored 8-bit weights
    alone do not make it, the plugin may dequantize a pattern it does not recognise and compute in float."""
    from ptq_core.errors import PTQError

    try:
        layers = openvino_layers(ctx.artifact, ctx.cache_dir)
    except PTQError as exc:
        _fail(ctx, str(exc))
    weight_ops = [precision for kind, precision in layers if kind in ("Convolution", "FullyConnected", "MatMul")]
    in_float = [p for p in weight_ops if p not in ("u8", "i8")]
    if not weight_ops or in_float:
        _fail(ctx, f"{len(in_float)} of {len(weight_ops)} conv/linear ops run in {sorted(set(in_float))} on OpenVINO")


def check_dtypes_as_named(ctx: Context) -> None:
    """Weights and activations are stored in the dtypes the cell's dtype name promises."""
    stored = ctx.cell.backend_spec.dtypes[ctx.cell.dtype]
    found = ctx.inspection
    if found.weight_dtypes != (stored.weights,):
        _fail(ctx, f"weights stored as {found.weight_dtypes}, the cell names {stored.weights}")
    if not found.activation_dtypes or not set(found.activation_dtypes) <= set(stored.activations):
        _fail(ctx, f"activations quantized to {found.activation_dtypes}, the cell names {stored.activations}")


def check_granularity_as_named(ctx: Context) -> None:
    """Every weight has one scale per output channel (per_channel) or one for the tensor (per_tensor)."""
    if ctx.inspection.weight_granularities != (ctx.cell.granularity,):
        _fail(ctx, f"weight scales are {ctx.inspection.weight_granularities}, the cell names {ctx.cell.granularity}")


def check_size_ratio(ctx: Context) -> None:
    """The 8-bit weights are ~4x smaller than the FP32 artifact's weights, and the file is smaller too."""
    found, fp32 = ctx.inspection, ctx.fp32_inspection
    payload = fp32.float_weight_bytes / found.payload_bytes if found.payload_bytes else 0.0
    if payload < MIN_PAYLOAD_RATIO:
        _fail(
            ctx,
            f"weights take {found.payload_bytes} B, only {payload:.2f}x less than the FP32 artifact's "
            f"{fp32.float_weight_bytes} B (need {MIN_PAYLOAD_RATIO}x)",
        )
    file_ratio = fp32.file_bytes / found.file_bytes
    if file_ratio < ctx.cell.backend_spec.min_file_ratio:
        than = f"only {file_ratio:.2f}x smaller than" if file_ratio >= 1 else f"{1 / file_ratio:.2f}x larger than"
        _fail(
            ctx,
            f"{ctx.artifact.name} is {found.file_bytes} B, {than} {ctx.fp32.name} "
            f"(need {ctx.cell.backend_spec.min_file_ratio}x smaller)",
        )


def check_accuracy_vs_fp32(ctx: Context) -> None:
    """Top-1 accuracy within 3 points (``ptq run --max-drop``) of the FP32 model measured on the same runtime."""
    result, fp32 = ctx.result(), ctx.result(fp32=True)
    drop = (fp32.correct * result.total - result.correct * fp32.total) * 100 / (fp32.total * result.total)
    if drop > ctx.max_drop:
        _fail(
            ctx,
            f"scored {result.accuracy:.2%} ({result.correct}/{result.total}), {drop:.2f} points below FP32 "
            f"{fp32.accuracy:.2%} (allowed {ctx.max_drop:g})",
        )


def check_no_class_collapses(ctx: Context) -> None:
    """No class loses more than 10 points against FP32 (a collapse hides inside a small overall drop)."""
    quant, fp32 = ctx.result().per_class_accuracy, ctx.result(fp32=True).per_class_accuracy
    drops = {c: round((f - q) * 100, 1) for c, (f, q) in enumerate(zip(fp32, quant, strict=True))}
    worst = max(drops, key=drops.__getitem__)
    if drops[worst] > MAX_CLASS_DROP_POINTS:
        _fail(ctx, f"class {worst} fell {drops[worst]} points below FP32 (allowed {MAX_CLASS_DROP_POINTS}); {drops}")


def check_calibrator_changes_activation_ranges(ctx: Context) -> None:
    """A calibrator that silently falls back to min/max (ORT's entropy with default bins) is caught."""
    assert ctx.sibling is not None
    minmax = ctx.inspected(ctx.sibling(ctx.cell.replace(calibrator="minmax"))).activation_scales
    ours = ctx.inspection.activation_scales
    if not ours or ours.keys() != minmax.keys():
        _fail(ctx, "its quantized activations are not the minmax cell's")
    if all(np.isclose(ours[name], minmax[name], rtol=1e-6) for name in ours):
        _fail(ctx, f"every activation scale equals minmax's: the {ctx.cell.calibrator} calibrator did nothing")


@dataclass(frozen=True)
class Check:
    fn: Callable[[Context], None]
    per_runtime: bool = False
    applies: Callable[[Cell], bool] = lambda cell: True

    @property
    def name(self) -> str:
        return self.fn.__name__


CHECKS: tuple[Check, ...] = (
    Check(check_output_shape, per_runtime=True),
    Check(check_calibration_stratified),
    Check(check_weights_are_8bit),
    Check(check_runs_8bit_on_openvino, applies=lambda c: c.backend_spec.format == "onnx"),
    Check(check_dtypes_as_named),
    Check(check_granularity_as_named),
    Check(check_size_ratio),
    Check(check_accuracy_vs_fp32, per_runtime=True),
    Check(check_no_class_collapses, per_runtime=True),
    Check(
        check_calibrator_changes_activation_ranges,
        applies=lambda c: c.calibrator != "minmax" and "minmax" in c.backend_spec.calibrators,
    ),
)
CHECKS_BY_NAME = {c.name: c for c in CHECKS}


@dataclass(frozen=True)
class Subject:
    """What one check runs on: a cell's artifact, or its artifact on one runtime."""

    cell: Cell
    runtime: str | None = None

    @property
    def id(self) -> str:
        return f"{self.cell.id}-on-{self.runtime}" if self.runtime else self.cell.id


def subjects(check: Check, cells: tuple[Cell, ...] = CELLS) -> Iterator[Subject]:
    for cell in cells:
        if check.applies(cell):
            if check.per_runtime:
                yield from (Subject(cell, rt.name) for rt in cell.runtimes)
            else:
                yield Subject(cell)


@dataclass(frozen=True)
class Outcome:
    subject: Subject
    check: str
    passed: bool
    message: str = ""
    expected_failure: str | None = None


def run_checks(
    context: Callable[[Cell], Context], cells: tuple[Cell, ...] = CELLS, skip: Collection[str] = ()
) -> Iterator[Outcome]:
    """Every applicable check (but those named in ``skip``) on every cell, outside pytest: one :class:`Outcome` each."""
    for cell in cells:
        ctx = functools.cache(context)(cell)
        for check in (c for c in CHECKS if c.name not in skip):
            for s in subjects(check, (cell,)):
                try:
                    check.fn(ctx.on(s.runtime) if s.runtime else ctx)
                    yield Outcome(s, check.name, True, expected_failure=known_failure(cell, check.name, s.runtime))
                except (CheckFailed, EvaluationFailed) as exc:
                    yield Outcome(s, check.name, False, str(exc), known_failure(cell, check.name, s.runtime))
