"""Inference speed: MACs counted from the model, a paired
timer for speed ratios on a noisy machine, the rows of a saved pytest-benchmark run, and the speed guards
(``tests/test_speed_guard.py``): each backend's default cell against FP32, one thread.

Nothing here builds an artifact (``cache.code_digest`` does not cover this module).
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def count_macs(module: Any, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates per image (convolutions and matmuls), counted by torch on one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros((1, *input_shape)))
    return int(counter.get_total_flops()) // 2  # torch counts a multiply-accumulate as 2 flops


def per_call_seconds(fn: Callable[[], object], target_s: float) -> tuple[int, float]:
    """How many calls of ``fn`` fill about ``target_s`` seconds, after one warm-up call."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, round(target_s / once)), once


# Seconds each callable runs in a round; read by each PairedTimer, so that tests of what a tool does with its
# timings (not of the timings) can shorten it here.
SEGMENT_S = 0.1


class PairedTimer:
    """Times several callables in interleaved rounds, so that load from other processes hits them alike.

    Each call of :meth:`round` runs every callable ``calls[name]`` times (about ``segment_s`` seconds each,
    ``SEGMENT_S`` by default), in an order that rotates from round to round, and records the seconds per call.
    A speed ratio is the median over rounds of the per-round ratio; each rate is the median over rounds.
    """

    def __init__(self, fns: Mapping[str, Callable[[], object]], segment_s: float | None = None) -> None:
        self.fns = dict(fns)
        segment = SEGMENT_S if segment_s is None else segment_s
        self.calls = {name: per_call_seconds(fn, segment)[0] for name, fn in self.fns.items()}
        self.seconds: dict[str, list[float]] = {name: [] for name in self.fns}
        self._rounds = 0
        self.last: dict[str, object] = {}

    def round(self) -> dict[str, object]:
        names = list(self.fns)
        shift = self._rounds % len(names)
        for name in names[shift:] + names[:shift]:
            fn, calls = self.fns[name], self.calls[name]
            start = time.perf_counter()
            for _ in range(calls):
                out = fn()
            self.seconds[name].append((time.perf_counter() - start) / calls)
            self.last[name] = out
        self._rounds += 1
        return self.last

    def median_seconds(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def speedup(self, name: str, over: str) -> float:
        """How many times faster ``name`` ran than ``over``: median of the per-round time ratios."""
        return statistics.median(b / a for a, b in zip(self.seconds[name], self.seconds[over], strict=True))


def float_images(images: np.ndarray) -> np.ndarray:
    """Test images as the models take them (float32 NHWC raw pixels), converted outside any timed region."""
    return np.ascontiguousarray(images, dtype=np.float32)


def latest_benchmarks(folder: Path = Path(".benchmarks")) -> Path | None:
    """The newest run saved by ``pytest --benchmark-autosave`` (files are numbered 0001_..., 0002_...)."""
    runs = sorted(folder.glob("*/*.json"), key=lambda p: p.name)
    return runs[-1] if runs else None


def speed_rows(benchmark_json: Path) -> list[dict[str, Any]]:
    """images/s of every timed model, with its ratio to FP32 at the same batch and threads (eager for PyTorch)."""
    rows = []
    for bench in json.loads(benchmark_json.read_text())["benchmarks"]:
        info = bench.get("extra_info", {})
        if "images_per_s" not in info or "runtime" not in info:
            continue
        rows.append(
            {
                "runtime": info["runtime"],
                "model": info["model"],
                "batch": info["batch"],
                "threads": info["threads"],
                "images_per_s": info["images_per_s"],
                "gmac_per_s": info["mac_per_s"] / 1e9,
            }
        )
    for row in rows:
        fp32 = "fp32-eager" if row["runtime"] == "torch" else "fp32"
        base = next(
            (
                r
                for r in rows
                if (r["runtime"], r["model"], r["batch"], r["threads"])
                == (row["runtime"], fp32, row["batch"], row["threads"])
            ),
            None,
        )
        row["vs_fp32"] = row["images_per_s"] / base["images_per_s"] if base else None
    return sorted(rows, key=lambda r: (r["runtime"], r["batch"], r["threads"], -r["images_per_s"]))


@dataclass(frozen=True)
class Guard:
    """A speed ratio watched in CI: the 8-bit cell against FP32, one thread, on one runtime and batch."""

    cell: Any  # ptq_core.matrix.Cell
    runtime: str  # a runtime name
    batch: int

    @property
    def id(self) -> str:
        return f"{self.cell.id}-on-{self.runtime}-b{self.batch}"


def guards() -> tuple[Guard, ...]:
    """Each backend's default cell on each runtime that serves it (runtimes.serving), one thread, b1 and b256."""
    from ptq_core.backends import BACKENDS
    from ptq_core.matrix import Cell
    from ptq_core.runtimes import serving

    return tuple(
        Guard(cell, rt.name, batch)
        for cell in (Cell(backend) for backend in BACKENDS)
        for rt in serving(cell)
        for batch in (1, 256)
        if rt.applies(batch, 1)
    )


def measure_guard(fp32: Path, quantized: Path, guard: Guard, images: np.ndarray, rounds: int = 15) -> float:
    """How many times faster the 8-bit model runs than FP32: ``rounds`` interleaved rounds, one thread; on a
    scored runtime as the suite scores it, on one that only deploys as deployed."""
    import torch

    from ptq_core.runtimes import as_predictor, get_runtime

    model, rt = guard.cell.model_spec, get_runtime(guard.runtime)
    x = images[: guard.batch]
    x = rt.inputs(x) if rt.inputs is not None else np.ascontiguousarray(x, dtype=model.input_dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = {"fp32": fp32, "8bit": quantized}
        if rt.scored:
            predictors = {name: as_predictor(p, model, rt.name, threads=1) for name, p in paths.items()}
        else:
            predictors = {name: rt.deployment(p, 1, x.shape) for name, p in paths.items()}
        fns = {name: functools.partial(predict, x) for name, predict in predictors.items()}
        timer = PairedTimer(fns)
        for _ in range(rounds):
            timer.round()
        return timer.speedup("8bit", over="fp32")
    finally:
        torch.set_num_threads(threads)


# Measurements of a guard before it fails, each after a pause: a lost kernel is slow in every one, a burst of
# load from another process is not. Seen once: 0.70x for a guard whose 13 other runs gave 1.55-1.58x. On the
# Zen 5 EPYC on 2026-12-03, such bursts lasted long enough to cover two back-to-back measurements (3 s each):
# five runs of the guards failed 7 of 50 (the ORT u8s8 b1 guard 1.22x and 1.22x, committed 1.56x), while a
# 150 s loop of two guards, measured alone, never gave two slow ones in a row for the same guard.
MEASUREMENTS_TO_FAIL = 3
REMEASURE_AFTER_S = 10.0


@dataclass(frozen=True)
class SpeedVerdict:
    """A guard's measurements against its CPU's committed ratio."""

    outcome: str  # "remeasure", "new", "rewritten", "holds", "faster" or "slower"
    ratio: float  # the best of the measurements
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome != "slower"

    @property
    def writes(self) -> bool:
        return self.outcome in ("new", "rewritten")

    @property
    def warns(self) -> bool:
        return self.outcome in ("new", "rewritten", "faster")


def judge_speed(
    committed: Mapping[str, float],
    guard_id: str,
    ratios: list[float],
    tolerance: float,
    baseline: Path,
    regen: bool = False,
) -> SpeedVerdict:
    """What the ratios measured so far (8-bit over FP32) say against ``committed`` (``baseline``'s ratios).

    No committed ratio for the guard (a new CPU), or ``regen``: the ratio is written and passes, reported.
    Slower than committed by more than ``tolerance``: measured again (``guard_speed`` waits
    ``REMEASURE_AFTER_S`` first), and fails when all of ``MEASUREMENTS_TO_FAIL`` are. Faster by more: passes,
    reported.
    """
    ratio = max(ratios)
    if regen or guard_id not in committed:
        old = f" (was {committed[guard_id]:.2f}x)" if guard_id in committed else ""
        outcome, how = ("rewritten", f"--force-regen{old}") if regen else ("new", "no committed ratio for this CPU")
        return SpeedVerdict(outcome, ratio, f"{guard_id}: {ratio:.2f}x FP32, new ({how}); written to {baseline}")
    expected = committed[guard_id]
    against = f"committed {expected:.2f}x for {baseline.stem} (tolerance {tolerance:.0%})"
    if ratio < expected * (1 - tolerance):
        if len(ratios) < MEASUREMENTS_TO_FAIL:
            return SpeedVerdict("remeasure", ratio)
        runs = ", ".join(f"{r:.2f}x" for r in ratios)
        return SpeedVerdict(
            "slower",
            ratio,
            f"{guard_id}: 8-bit runs {runs} FP32, {against}: the 8-bit kernels got slower, or FP32 ones faster",
        )
    if ratio > expected * (1 + tolerance):
        return SpeedVerdict("faster", ratio, f"{guard_id}: {ratio:.2f}x FP32, {against}; --force-regen records it")
    return SpeedVerdict("holds", ratio)


def committed_ratios(baseline: Path) -> dict[str, float]:
    import yaml

    if not baseline.exists():
        return {}
    return yaml.safe_load(baseline.read_text()) or {}


def record_ratio(baseline: Path, guard_id: str, ratio: float) -> None:
    """Write one guard's ratio into ``baseline``, keeping those of the others (read afresh: another may have
    written since)."""
    import yaml

    baseline.parent.mkdir(parents=True, exist_ok=True)
    ratios = {**committed_ratios(baseline), guard_id: round(ratio, 3)}
    baseline.write_text(yaml.safe_dump(ratios, sort_keys=True))


def guard_speed(
    guard_id: str,
    measure: Callable[[], float],
    baseline: Path,
    tolerance: float,
    regen: bool = False,
    pause: Callable[[], None] = lambda: time.sleep(REMEASURE_AFTER_S),
) -> SpeedVerdict:
    """Measure a guard (again, after ``pause``, while ``judge_speed`` asks) and write its ratio when the verdict
    says so."""
    committed = committed_ratios(baseline)
    ratios = [measure()]
    while (verdict := judge_speed(committed, guard_id, ratios, tolerance, baseline, regen)).outcome == "remeasure":
        pause()
        ratios.append(measure())
    if verdict.writes:
        record_ratio(baseline, guard_id, verdict.ratio)
    return verdict


def speed_platform() -> str:
    """What an 8-bit speed ratio is keyed by: the machine, the CPU capability and the int8 MACs its unit retires
    per cycle, as measured (``cpu_peak``). Two CPUs of one capability differ there: this suite's Zen 5 EPYC
    retires 2 VPDPBUSD zmm per cycle (128 MACs), a Zen 4-class EPYC 1 (64), and its ORT u8s8 guard at batch 256
    measured 1.69-1.77x where the Zen 5 measured 2.05x. Without a measured peak: the capability alone."""
    import platform

    from ptq_core.cpu_peak import int8_peak
    from ptq_core.machine import cpu_capability

    peak = int8_peak()
    unit = f"-{round(peak.macs_per_instruction * peak.instructions_per_cycle)}macs" if peak else ""
    return f"{platform.machine()}-{cpu_capability()}{unit}"
