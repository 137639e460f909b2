"""The fastest honest 8-bit deployment: every runtime with FP32 and each backend's default cell, timed together.

For each (batch, threads) group every deployment runs in the same interleaved rounds (``PairedTimer``), so
its ratio to ONNX Runtime FP32 is measured under the same load. Each deployment is also scored on the
10,000 test images exactly as it was timed: "honest" means within the suite's accuracy drop of FP32 on
the same runtime. ``ptq bench`` writes the table; the goals are ``tests/test_benchmark.py::test_goal_*``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.checks import MAX_ACCURACY_DROP_POINTS
from ptq_core.evaluation import EvaluationFailed
from ptq_core.known_failures import known_failure
from ptq_core.matrix import Cell
from ptq_core.models import DEFAULT_MODEL, Model, get_model
from ptq_core.runtimes import Runtime, deploying, get_runtime
from ptq_core.speed import PairedTimer, count_macs

REFERENCE = ("onnxruntime", "fp32")
BATCHES, THREADS = (1, 256), (1, 2)
ROUNDS = 7  # interleaved rounds per (batch, threads) group


@dataclass(frozen=True)
class Deployment:
    runtime: str  # a name in runtimes.RUNTIMES that deploys
    model: str  # "fp32" or a cell id
    path: Path
    spec: Model  # the model the artifact is of: its input shape and dtype

    @property
    def name(self) -> str:
        return f"{self.model} on {self.runtime}"

    @property
    def rt(self) -> Runtime:
        return get_runtime(self.runtime)

    @property
    def fp32_twin(self) -> tuple[str, str]:
        """The FP32 deployment it is compared with: FP32 on the same runtime, unless its runtime names another."""
        return (self.rt.fp32_twin or self.runtime, "fp32")

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """The images as this deployment takes them (prepared outside any timed region)."""
        transform = self.rt.inputs
        return transform(images) if transform is not None else np.ascontiguousarray(images, self.spec.input_dtype)

    def applies(self, batch: int, threads: int) -> bool:
        return self.rt.applies(batch, threads)


def deployments(ws: Any, model: str = DEFAULT_MODEL) -> list[Deployment]:
    """FP32 and each backend's default cell on every runtime that deploys it, in registry order."""
    from ptq_core.backends import BACKENDS

    spec = get_model(model)
    return [
        Deployment(rt.name, cell.id if cell else "fp32", path, spec)
        for cell in (None, *(Cell(b, model=model) for b in BACKENDS))
        for rt in deploying()
        if (path := rt.deployed_artifact(ws, model, cell)) is not None
    ]


def runner(d: Deployment, threads: int, batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x) -> scores`` for ``d`` on batches of ``batch`` images with ``threads`` threads."""
    return d.rt.deployment(d.path, threads, (batch, *d.spec.input_shape))


def bound_run(d: Deployment, images: np.ndarray, threads: int) -> Callable[[], object]:
    """``d`` deployed for batches of ``len(images)``, bound to those images as it takes them: a call runs one batch."""
    return functools.partial(runner(d, threads, len(images)), d.inputs(images))


def predictions(d: Deployment, images: np.ndarray, threads: int = 1, batch: int = 256) -> np.ndarray:
    """Top-1 classes of the deployment as it runs, in batches of ``batch`` (the last one padded). Raises
    :class:`EvaluationFailed` when its runtime cannot load it, raises on a batch or answers non-finite scores."""
    from ptq_core.evaluation import Outcome

    try:
        run = runner(d, threads, batch)
    except EvaluationFailed:
        raise
    except Exception as exc:  # the runtime's own error, or ours naming it
        raise EvaluationFailed(Outcome.FAILED_TO_LOAD, _reason(exc)) from exc
    classes, non_finite = [], 0
    for start in range(0, len(images), batch):
        chunk = d.inputs(images[start : start + batch])
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        try:
            scores = np.asarray(run(chunk))[:n]
        except Exception as exc:
            reason = f"on images {start}-{start + n - 1}: {_reason(exc)}"
            raise EvaluationFailed(Outcome.FAILED_WHILE_SCORING, reason) from exc
        non_finite += int((~np.isfinite(scores).reshape(n, -1).all(axis=1)).sum())
        classes.append(scores.argmax(1))
    if non_finite:
        raise EvaluationFailed(
            Outcome.FAILED_WHILE_SCORING, f"{non_finite} of {len(images)} images got non-finite scores (NaN or inf)"
        )
    return np.concatenate(classes)


def accuracy(d: Deployment, images: np.ndarray, labels: np.ndarray, threads: int = 1, batch: int = 256) -> float:
    """Top-1 accuracy of the deployment as it runs, in batches of ``batch`` (the last one padded)."""
    return float((predictions(d, images, threads, batch) == labels).mean())


def group_timer(
    deps: list[Deployment], images: np.ndarray, batch: int, threads: int, failures: dict[str, str] | None = None
) -> PairedTimer:
    """Every deployment that applies to (batch, threads), ready for interleaved rounds on the first images; one
    that fails to load or to run is left out, its reason in ``failures`` (by deployment name)."""
    fns = {}
    for d in deps:
        if not d.applies(batch, threads):
            continue
        try:
            run = bound_run(d, images[:batch], threads)
            run()
        except Exception as exc:  # a runtime's own error: a result of this deployment, the others go on
            if failures is not None:
                failures[d.name] = _reason(exc)
            continue
        fns[d.name] = run
    return PairedTimer(fns)


def _reason(exc: BaseException) -> str:
    from ptq_core.evaluation import reason_of

    return reason_of(exc.__cause__ if isinstance(exc.__cause__, Exception) else exc)


@dataclass(frozen=True)
class Timing:
    """How fast a deployment ran in its group's interleaved rounds."""

    images_per_s: float
    gmac_per_s: float
    vs_ort_fp32: float | None  # None: ORT FP32 itself could not run
    vs_best_float: float | None
    best_float: str | None  # the fastest float deployment within the allowed drop of ORT FP32
    peak_fraction: float | None  # of the int8 peak, for 8-bit deployments on a CPU whose peak is known


@dataclass(frozen=True)
class BenchRow:
    """One deployment at one (batch, threads): its accuracy as it runs, and its timing or why it did not run."""

    runtime: str
    model: str  # "fp32" or a cell id
    batch: int
    threads: int
    outcome: str
    accuracy: float | None
    drop_points: float | None
    honest: bool  # an 8-bit deployment within the allowed drop of its FP32 twin
    honest_float: bool  # a float one within the allowed drop of ORT FP32
    reason: str | None = None
    timing: Timing | None = None

    def as_json(self) -> dict[str, Any]:
        """bench.json's row: the timing's fields beside the others, and none of a field that does not apply."""
        row = {k: v for k, v in asdict(self).items() if k != "timing" and not (k == "reason" and v is None)}
        return {**row, **(asdict(self.timing) if self.timing else {})}


def group_rows(
    timer: PairedTimer,
    deps: list[Deployment],
    batch: int,
    threads: int,
    macs: int,
    scored: dict[Any, Any],
    failures: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A row per deployment of the group: its speed over ORT FP32 and over the fastest float deployment within
    the allowed drop (OpenVINO's bf16 where the CPU has it), from the same rounds; or why it did not run."""
    from ptq_core.cpu_peak import int8_peak

    peak = int8_peak()
    reference = f"{REFERENCE[1]} on {REFERENCE[0]}"
    floats = [
        d.name
        for d in deps
        if d.model == "fp32" and d.name in timer.fns and scored[(d.runtime, d.model)]["honest_float"]
    ]
    best_float = min(floats, key=timer.median_seconds, default=None)
    rows = []
    for d in deps:
        scores = scored[(d.runtime, d.model)]
        row = BenchRow(d.runtime, d.model, batch, threads, **scores)
        if d.name not in timer.fns:
            reason = (failures or {}).get(d.name)
            if reason is not None or row.outcome != "scored":
                failed = row.outcome if row.outcome != "scored" else "failed to load"
                rows.append(replace(row, outcome=failed, reason=row.reason or reason, honest=False).as_json())
            continue
        per_s = batch / timer.median_seconds(d.name)
        timing = Timing(
            images_per_s=per_s,
            gmac_per_s=per_s * macs / 1e9,
            vs_ort_fp32=timer.speedup(d.name, over=reference) if reference in timer.fns else None,
            vs_best_float=timer.speedup(d.name, over=best_float) if best_float else None,
            best_float=best_float,
            peak_fraction=per_s * macs / 1e9 / (peak.gmacs_per_core * threads) if peak and d.model != "fp32" else None,
        )
        rows.append(replace(row, timing=timing).as_json())
    return rows


def macs_of(ws: Any, model: str = DEFAULT_MODEL) -> int:
    return count_macs(ws.fp32_module(model), get_model(model).input_shape)


def measure(
    ws: Any,
    model: str = DEFAULT_MODEL,
    batches: tuple[int, ...] = BATCHES,
    threads: tuple[int, ...] = THREADS,
    rounds: int = ROUNDS,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every deployment at every batch and thread count; ratios to ORT FP32 from the same interleaved rounds."""
    from ptq_core.cpu_peak import int8_peak

    macs, peak = macs_of(ws, model), int8_peak()
    test = ws.split("test")
    deps = deployments(ws, model)
    say(f"scoring {len(deps)} deployments on {len(test)} test images as they run")
    scored = scores(ws, deps, model)
    for (runtime, name), row in scored.items():
        if row["outcome"] != "scored":
            say(f"  {name} on {runtime} {row['outcome']}: {row['reason']}")
    rows: list[dict[str, Any]] = []
    for batch in batches:
        for t in threads:
            failures: dict[str, str] = {}
            runnable = [d for d in deps if scored[(d.runtime, d.model)]["outcome"] == "scored"]
            timer = group_timer(runnable, test.images, batch, t, failures)
            say(f"batch {batch}, {t} thread(s): {len(timer.fns)} deployments, {rounds} interleaved rounds")
            for name, reason in failures.items():
                say(f"  {name} failed to run: {reason}")
            for _ in range(rounds):
                timer.round()
            rows += group_rows(timer, deps, batch, t, macs, scored, failures)
    from ptq_core.cpu_peak import peak_unknown_reason

    return {
        "model": model,
        "macs_per_image": macs,
        "peak_unknown": None if peak else f"unknown: {peak_unknown_reason()}",
        "peak": None
        if peak is None
        else {**peak.__dict__, "gmacs_per_core": peak.gmacs_per_core, "formula": peak.formula},
        "rows": rows,
        "fastest": fastest(rows),
    }


def scores(ws: Any, deps: list[Deployment], model: str = DEFAULT_MODEL) -> dict[Any, Any]:
    """Accuracy of each deployment as deployed, and whether it is within the allowed drop of its FP32 twin (an
    8-bit one: "honest"), or of ORT FP32 (a float one, e.g. bf16: "honest_float"). A deployment its runtime
    cannot load or run is recorded with the reason; the others go on."""
    test = ws.split("test")
    acc: dict[tuple[str, str], float | None] = {}
    failed: dict[tuple[str, str], tuple[str, str]] = {}
    for d in deps:
        try:
            acc[(d.runtime, d.model)] = accuracy(d, test.images, test.labels)
        except EvaluationFailed as exc:
            acc[(d.runtime, d.model)] = None
            failed[(d.runtime, d.model)] = (str(exc.outcome), exc.reason)
    out = {}
    for d in deps:
        mine, fp32, ort_fp32 = acc[(d.runtime, d.model)], acc.get(d.fp32_twin), acc.get(REFERENCE)
        if mine is None or fp32 is None:
            outcome, reason = failed.get((d.runtime, d.model)) or failed.get(d.fp32_twin) or ("failed to load", "")
            if (d.runtime, d.model) not in failed:
                reason = f"its FP32 twin {outcome}: {reason}"
            out[(d.runtime, d.model)] = {
                "outcome": outcome,
                "reason": reason,
                "accuracy": mine,
                "drop_points": None,
                "honest": False,
                "honest_float": False,
            }
            continue
        drop = (fp32 - mine) * 100
        cell = next((c for c in _default_cells(model) if c.id == d.model), None)
        known = cell is not None and known_failure(cell, "check_accuracy_vs_fp32", None) is not None
        out[(d.runtime, d.model)] = {
            "outcome": "scored",
            "accuracy": mine,
            "drop_points": drop,
            "honest": d.model != "fp32" and drop <= MAX_ACCURACY_DROP_POINTS and not known,
            "honest_float": d.model == "fp32"
            and ort_fp32 is not None
            and (ort_fp32 - mine) * 100 <= MAX_ACCURACY_DROP_POINTS,
        }
    return out


def _default_cells(model: str) -> tuple[Cell, ...]:
    from ptq_core.backends import BACKENDS

    return tuple(Cell(b, model=model) for b in BACKENDS)


def fastest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (batch, threads): the fastest 8-bit deployment within the accuracy drop, with its ratios to ORT FP32
    and to the fastest float deployment."""

    def speed(row: dict[str, Any]) -> float:
        ratio = row.get("vs_ort_fp32")  # None when ORT FP32 itself could not run: then its own rate
        return float(ratio if ratio is not None else row.get("images_per_s") or 0.0)

    best: dict[str, Any] = {}
    for row in rows:
        if not row.get("honest") or not speed(row):
            continue
        key = f"b{row['batch']}-t{row['threads']}"
        if key not in best or speed(row) > speed(best[key]):
            best[key] = row
    return best
