"""``ptq tune``: the 8-bit model to ship, chosen on validation images by accuracy and speed.

Protocol (``protocol``): the cells calibrate on stratified images of the store's labelled split (CIFAR-10's
train split, or a user's labelled --calibration file); a stratified validation set of its other images decides
everything (which candidates hold ``max_drop``, which layers stay in float); the scored split is read once, at
the end, for the chosen model and its FP32 twin only. The search space (``candidates``) is every cell the store
builds, calibrated on 200 and on 1,000 train images (``--calibration-samples``; entropy and distribution cells on
the first only), on every runtime that serves it as ``ptq bench`` deploys it (``runtimes.serving``: an ONNX cell
on ONNX Runtime and OpenVINO, a PT2E cell compiled by Inductor); the calibrator variants its backend declares
(``Backend.calibrator_variants``); and mixed precision (``search.mixed_precision``): the cell a backend's
``Backend.mixed_precision`` names, with its most sensitive conv/linear layers left in float, added until the
drop holds. NNCF's accuracy control on the same images is validated beside them for comparison
(``accuracy_control``). Among the candidates within ``max_drop`` of FP32 on validation, the fastest at batch 256
(``timing``: one interleaved run, 1 thread, on the runtime that will serve it) or the smallest wins (``choice``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed, Outcome
from ptq_core.models import DEFAULT_MODEL
from ptq_core.options import max_drop_points
from ptq_core.runtimes import runtimes_for
from ptq_core.tune import accuracy_control
from ptq_core.tune.candidates import (
    UNSERVED,
    calibrator_variants,
    candidate_runtimes,
    cell_candidates,
    mixed_precision_bases,
    searched_cells,
)
from ptq_core.tune.choice import OBJECTIVES, choose, pareto, score_nncf_on_test, score_on_test
from ptq_core.tune.protocol import (
    CALIBRATION_SAMPLES,
    SPEED_BATCH,
    VALIDATION_SEED,
    VALIDATION_SIZE,
    Protocol,
    digest,
    validation_indices,
)
from ptq_core.tune.search import Row, Search, mixed_precision
from ptq_core.tune.timing import Timing, head_to_head, time_search
from ptq_core.workspace import ArtifactStore

__all__ = [
    "CALIBRATION_SAMPLES",
    "HEAD_TO_HEAD_ROUNDS",
    "SPEED_BATCH",
    "SPEED_ROUNDS",
    "VALIDATION_SEED",
    "VALIDATION_SIZE",
    "choose",
    "digest",
    "pareto",
    "tune",
    "validation_indices",
]

# Read by each tune(), so that tests (and mutations) can set them here: the interleaved timing rounds of all
# the timed candidates, and those of the chosen model against NNCF's.
SPEED_ROUNDS, HEAD_TO_HEAD_ROUNDS = 5, 31


def tune(
    ws: ArtifactStore,
    max_drop: float,
    model: str = DEFAULT_MODEL,
    objective: str = "speed",
    budget_minutes: float | None = None,
    validation_size: int | None = None,
    patterns: tuple[str, ...] = (),
    say: Callable[[str], None] = print,
    calibration_samples: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Search, choose and score once on the test split; the json-ready trace of all of it.

    ``calibration_samples``: the calibration sets' sizes (None: ``CALIBRATION_SAMPLES``; a user's store has one
    set and refuses them)."""
    if budget_minutes is not None and budget_minutes <= 0:
        raise PTQError(f"--budget {budget_minutes:g}: give the minutes the search may take (> 0)")
    if objective not in OBJECTIVES:
        raise PTQError(f"--objective {objective!r}: choose {' or '.join(OBJECTIVES)}")
    max_drop = max_drop_points(max_drop)  # the one validator of --max-drop, --ptq-max-drop and max_drop
    start = time.perf_counter()
    protocol = Protocol.of(ws, model, calibration_samples, validation_size)
    cells = searched_cells(ws, model, patterns)
    deadline = start + budget_minutes * 60 if budget_minutes else None
    search = Search(ws, model, protocol, max_drop, deadline, say)
    # every runtime a candidate, or NNCF's accuracy control (an ONNX model), is validated on
    served = {rt for c in cells for rt in candidate_runtimes(c)} | {rt.name for rt in runtimes_for("onnx", True)}
    search.score_fp32(served)
    say(
        f"validation: {len(protocol.validation)} {protocol.split} images; FP32 "
        + ", ".join(f"{k} {v:.2%}" for k, v in search.fp32_accuracy.items())
    )
    if any(not candidate_runtimes(c) for c in cells):
        say(f"not searched: {UNSERVED}")
    space = itertools.chain(
        cell_candidates(ws, cells, protocol, patterns),  # built now; the variants as the search reaches them
        calibrator_variants(ws, cells, protocol),
    )
    for cand in search.within_budget(space):
        search.validate(cand)
    for cell, mixed in mixed_precision_bases(model):
        mixed_precision(search, cell, mixed)
    nncf = accuracy_control.compare(search)
    timing = time_search(search, nncf, ws.fp32("onnx", model), SPEED_ROUNDS)
    if not search.rows or not nncf:
        reasons = "; ".join(f.reason for f in search.failed[:3])
        raise EvaluationFailed(Outcome.FAILED_TO_LOAD, f"no candidate could be scored: {reasons}")
    result = _chosen_and_scored(search, objective, nncf, timing)
    result["wall_seconds"] = time.perf_counter() - start
    return result


def _chosen_and_scored(search: Search, objective: str, nncf: list[Row], timing: Timing) -> dict[str, Any]:
    """tune.json: the search's trace, the choice (or the best found and its shortfall) and NNCF's accuracy
    control, each scored on the test split."""
    ws, model, rows = search.ws, search.model, search.rows
    chosen = choose(rows, search.max_drop, objective)
    best = chosen or min(rows, key=lambda r: r.validation_drop_points)
    nncf_best = max(nncf, key=lambda r: r.vs_ort_fp32 or 0.0)  # served where it runs fastest
    result = {
        "model": model,
        "max_drop_points": search.max_drop,
        "objective": objective,
        "protocol": search.protocol.trace(ws, model),
        "fp32_validation_accuracy": search.fp32_accuracy,
        "candidates": [r.json() for r in rows],
        "pareto": [r.candidate for r in pareto(rows)],
        "failed_candidates": [asdict(f) for f in search.failed],
        "best_float": timing.best_float,
        "stopped": search.stopped,
        "chosen" if chosen else "best_found": score_on_test(ws, model, best),
    }
    if best.vs_ort_fp32 is not None:
        result["head_to_head"] = head_to_head(timing, best, nncf_best, HEAD_TO_HEAD_ROUNDS)
    result["nncf_accuracy_control"] = score_nncf_on_test(ws, model, nncf_best, nncf)
    if not chosen:
        result["shortfall_points"] = best.validation_drop_points - search.max_drop
    return result
