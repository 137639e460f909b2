"""Speed: the candidates within the drop (else the three closest) and NNCF's accuracy control, timed in one
interleaved run against the float deployments, each on the runtime that would serve it, 1 thread, batch
SPEED_BATCH; and the chosen model against NNCF's in rounds of their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptq_core.bench import REFERENCE, Deployment, bound_run
from ptq_core.evaluation import EvaluationFailed, Outcome, reason_of
from ptq_core.models import get_model
from ptq_core.speed import PairedTimer
from ptq_core.tune.protocol import SPEED_BATCH
from ptq_core.tune.search import Failed, Row, Search

# The float deployments 8-bit is timed against: ORT FP32 (the reference) and OpenVINO at its default precision,
# bf16 where the CPU has it (AVX-512 BF16, AMX-BF16): no calibration, and on some CPUs nearly as fast as 8-bit
FLOAT_RUNTIMES = (REFERENCE[0], "openvino_default")
OVER = f"fp32 on {REFERENCE[0]}"  # every speed is a ratio over it


@dataclass(frozen=True)
class Timing:
    runs: dict[str, Callable[[], object]]  # by deployment name: one call runs one batch
    best_float: dict[str, Any]  # tune.json's: the fastest float deployment, its speed over ORT FP32


def float_deployments(search: Search, fp32: Path) -> dict[str, str]:
    """``{name: runtime}`` of the float deployments that load and hold ``max_drop`` of ORT FP32 on validation."""
    reference = search.fp32_accuracy[REFERENCE[0]]
    out = {}
    for rt in FLOAT_RUNTIMES:
        try:
            pred = search.predictions(fp32, rt)
        except EvaluationFailed:
            continue
        if rt == REFERENCE[0] or (reference - search.accuracy(pred)) * 100 <= search.max_drop:
            out[f"fp32 on {rt}"] = rt
    return out


def time_search(search: Search, nncf: list[Row], fp32: Path, rounds: int) -> Timing:
    """Give each timed row its speeds; a row its runtime cannot deploy at the timed batch is marked
    ``deployment_failed`` (never chosen: it cannot be served) and recorded failed, and the rest go on."""
    within = [r for r in search.rows if r.validation_drop_points <= search.max_drop]
    timed = (within or sorted(search.rows, key=lambda r: r.validation_drop_points)[:3]) + nncf
    images, spec = search.protocol.images[:SPEED_BATCH], get_model(search.model)
    floats = float_deployments(search, fp32)
    runs = {name: bound_run(Deployment(rt, "fp32", fp32, spec), images, 1) for name, rt in floats.items()}
    deployed = []
    for r in timed:
        try:
            runs[r.candidate] = bound_run(Deployment(r.runtime, r.cell, Path(r.artifact), spec), images, 1)
            deployed.append(r)
        except Exception as exc:
            r.deployment_failed = reason = reason_of(exc.__cause__ or exc)
            search.failed.append(Failed(r.candidate, r.cell, r.runtime, str(Outcome.FAILED_TO_LOAD), reason))
    timer = PairedTimer(runs)
    search.say(f"timing {len(deployed)} candidates against ORT FP32, batch {SPEED_BATCH}, 1 thread, {rounds} rounds")
    for _ in range(rounds):
        timer.round()
    best = min(floats, key=timer.median_seconds)
    for r in deployed:
        r.vs_ort_fp32 = timer.speedup(r.candidate, over=OVER)
        r.vs_best_float = timer.speedup(r.candidate, over=best)
        r.images_per_s = SPEED_BATCH / timer.median_seconds(r.candidate)
    speed = {"vs_ort_fp32": timer.speedup(best, over=OVER), "images_per_s": SPEED_BATCH / timer.median_seconds(best)}
    return Timing(runs, {"deployment": best, **speed})


def head_to_head(timing: Timing, mine: Row, theirs: Row, rounds: int) -> dict[str, Any]:
    """The chosen model against NNCF's: one interleaved run leaves +-2.5 % between ResNet8 candidates of the
    same graph, so the answer to "as fast as NNCF's?" gets rounds of its own."""
    duel = PairedTimer({r.candidate: timing.runs[r.candidate] for r in (mine, theirs)})
    for _ in range(rounds):
        duel.round()
    pairs = zip(duel.seconds[mine.candidate], duel.seconds[theirs.candidate], strict=True)
    return {
        "rounds": rounds,
        "vs_nncf_accuracy_control": duel.speedup(mine.candidate, over=theirs.candidate),
        "rounds_faster": sum(a < b for a, b in pairs),
    }
