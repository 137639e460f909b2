"""Validating candidates: each scored once on the validation images against FP32 on the same runtime, within the
budget; and mixed precision, which reverts the most sensitive layers to float until the drop holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ptq_core.backends import MixedPrecision
from ptq_core.evaluation import EvaluationFailed, Outcome
from ptq_core.matrix import Cell
from ptq_core.runtimes import get_runtime
from ptq_core.tune.candidates import Candidate, build, candidate_runtimes
from ptq_core.tune.predictions import validation_predictions
from ptq_core.tune.protocol import Protocol
from ptq_core.workspace import ArtifactStore

T = TypeVar("T")


@dataclass
class Row:
    """A validated artifact on one runtime: a candidate of tune.json (or one of NNCF's accuracy control's rows).
    ``json`` leaves out what is None: a field a row of its kind does not have, or has not been given yet."""

    candidate: str
    cell: str
    runtime: str
    artifact: str
    file_bytes: int
    validation_accuracy: float
    validation_drop_points: float
    float_layers: list[str] | None = None  # these four: a searched candidate's (NNCF's rows have none)
    calibration_images: int | None = None
    calibrator_options: dict[str, object] | None = None
    validation_changed: int | None = None  # validation images whose class differs from FP32's
    tune_seconds: float | None = None  # NNCF's: how long its accuracy control took
    vs_ort_fp32: float | None = None  # once timed
    vs_best_float: float | None = None
    images_per_s: float | None = None
    deployment_failed: str | None = None  # its runtime could not deploy it at the timed batch: never chosen

    def json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Failed:
    """A candidate its runtime could not load or score: a result, not a candidate."""

    candidate: str
    cell: str
    runtime: str
    outcome: str
    reason: str


@dataclass
class Search:
    """What the search found so far: the candidates validated, those a runtime failed, and why it stopped."""

    ws: ArtifactStore
    model: str
    protocol: Protocol
    max_drop: float
    deadline: float | None  # perf_counter seconds; None: no --budget
    say: Callable[[str], None]
    fp32: dict[str, np.ndarray] = field(default_factory=dict)  # FP32's validation predictions, per runtime
    unserved: dict[str, str] = field(default_factory=dict)  # runtime -> why FP32 failed there
    rows: list[Row] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    stopped: str | None = None

    def score_fp32(self, runtimes: Iterable[str]) -> None:
        """FP32 on each runtime: without it no candidate there can be compared, and each becomes a failed one."""
        for name in sorted(runtimes):
            try:
                fp32 = self.ws.fp32(get_runtime(name).format, self.model)  # same format, same runtime
                self.fp32[name] = self.predictions(fp32, name)
            except EvaluationFailed as exc:
                self.unserved[name] = f"FP32 {exc}"

    @property
    def fp32_accuracy(self) -> dict[str, float]:
        return {rt: self.accuracy(p) for rt, p in self.fp32.items()}

    def accuracy(self, predictions: np.ndarray) -> float:
        return float((predictions == self.protocol.labels).mean())

    def predictions(self, path: Path, runtime: str) -> np.ndarray:
        return validation_predictions(self.ws, path, runtime, self.model, self.protocol)

    def scored(self, name: str, cell: str, runtime: str, path: Path) -> np.ndarray | None:
        """The validation predictions of ``path`` on ``runtime``, or None with the failure recorded."""
        try:
            if runtime in self.unserved:
                raise EvaluationFailed(Outcome.FAILED_TO_LOAD, self.unserved[runtime])
            return self.predictions(path, runtime)
        except EvaluationFailed as exc:
            self.failed.append(Failed(name, cell, runtime, str(exc.outcome), exc.reason))
            return None

    def validate(self, cand: Candidate) -> Row | None:
        """The candidate's row, kept among the rows; None when its runtime failed it (recorded as failed)."""
        pred = self.scored(cand.name, cand.cell.id, cand.runtime, cand.path)
        if pred is None:
            self.say(f"[-] {cand.name}: {self.failed[-1].outcome}: {self.failed[-1].reason}")
            return None
        acc, fp32 = self.accuracy(pred), self.fp32_accuracy[cand.runtime]
        row = Row(
            candidate=cand.name,
            cell=cand.cell.id,
            runtime=cand.runtime,
            float_layers=list(cand.float_layers),
            calibration_images=cand.calibration.num_samples,
            calibrator_options=dict(cand.options),
            artifact=str(cand.path),
            file_bytes=cand.path.stat().st_size,
            validation_accuracy=acc,
            validation_drop_points=(fp32 - acc) * 100,
            validation_changed=int((pred != self.fp32[cand.runtime]).sum()),
        )
        self.rows.append(row)
        self.say(f"[{len(self.rows)}] {cand.name}: validation {acc:.2%} ({(acc - fp32) * 100:+.2f} points)")
        return row

    def within_budget(self, items: Iterable[T]) -> Iterator[T]:
        """``items`` until the budget is spent (then ``stopped``), but never before one candidate is validated."""
        for item in items:
            if self.deadline is not None and time.perf_counter() > self.deadline and self.rows:
                self.stopped = "budget"
                return
            yield item


def mixed_precision(search: Search, cell: Cell, mixed: MixedPrecision) -> None:
    """The cell with its most sensitive layers left in float, one more each time, until the drop holds. Each
    layer is ranked by the validation accuracy it regains alone in float, on ``mixed.ranking_runtime``, as NNCF's
    accuracy control ranks them; nothing to do when the cell was not searched or already holds the drop."""
    runtimes, config = candidate_runtimes(cell), search.protocol.base
    base = next(
        (
            r
            for r in search.rows
            if (r.cell, r.calibration_images, r.calibrator_options, r.float_layers)
            == (cell.id, config.num_samples, {}, [])
            and r.runtime == runtimes[0]
        ),
        None,
    )
    if base is None or base.validation_drop_points <= search.max_drop or search.stopped:
        return
    base_hits = search.accuracy(search.predictions(Path(base.artifact), mixed.ranking_runtime))
    gains = {}
    for layer in search.within_budget(mixed.layers(search.ws.build_inputs(cell, config)[0])):
        alone = build(search.ws, cell, config, (layer,))
        gains[layer] = search.accuracy(search.predictions(alone, mixed.ranking_runtime)) - base_hits
    ranked = sorted(gains, key=lambda k: -gains[k])
    search.say(
        f"{cell.backend} layer sensitivity (validation accuracy regained in float, on {mixed.ranking_runtime}): "
        + ", ".join(f"{k} {gains[k]:+.2%}" for k in ranked)
    )
    for k in search.within_budget(range(1, len(ranked) + 1)):
        layers = tuple(ranked[:k])
        cand = Candidate(cell, runtimes[0], build(search.ws, cell, config, layers), layers, calibration=config)
        row = search.validate(cand)
        if row is None or row.validation_drop_points <= search.max_drop:
            break
