"""Speed guards: each backend's default cell against FP32, one thread, interleaved, at batch 1 and 256.

An upgrade that loses the int8 kernels (say u8s8 from 2x FP32 to 1x) keeps every accuracy check green;
these fail it. The ratio (8-bit over FP32 throughput, median of per-round ratios, ``PairedTimer``) is
compared with the committed ratio for this CPU (``tests/baselines/speed/<machine>-<capability>-<N>macs.yml``,
N the int8 MACs its unit retires per cycle: ``ptq_core.speed.speed_platform``) by
``ptq_core.speed.judge_speed``: slower by more than ``TOLERANCE`` in ``MEASUREMENTS_TO_FAIL`` measurements,
``REMEASURE_AFTER_S`` apart, fails; faster by more is reported. A CPU without a committed ratio gets its
measured one written there and passes, reported as new (a ``BaselineChanged`` warning), as the accuracy
baselines of a new platform do; ``--force-regen`` rewrites them. ``tox -e speed`` runs the guards; the
rule's own tests below run in the default suite.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import pytest
import yaml

from ptq_core.baselines import BaselineChanged
from ptq_core.speed import Guard, SpeedVerdict, guard_speed, guards, judge_speed, measure_guard, speed_platform


def baseline() -> Path:
    """This CPU's committed ratios (the int8 peak probe names its unit: measured when a guard first runs)."""
    return Path(__file__).parent / "baselines" / "speed" / f"{speed_platform()}.yml"


# Ten quiet runs of this module on the development machine (2-core EPYC, AVX-512 VNNI): the widest
# run-to-run spread of a guard, (max - min) / median, was 11.6 % (NNCF on OpenVINO, batch 256); no run fell
# more than 5.2 % below its guard's median. The committed x86_64-avx512vnni-128macs ratios are those medians (a
# Zen 5: 2 VPDPBUSD zmm per cycle); the tolerance is the widest spread, rounded up to a whole percent.
# x86_64-amx-1024macs.yml holds the ratios of a single
# run on the AMX Xeon, whose spread was not measured: the same tolerance applies there. Losing the VNNI
# kernels costs u8s8 half its speed-up.
TOLERANCE = 0.12


def enforce(verdict: SpeedVerdict) -> None:
    if verdict.warns:
        warnings.warn(BaselineChanged(verdict.message), stacklevel=2)
    if not verdict.passed:
        pytest.fail(verdict.message)


@pytest.mark.speed
@pytest.mark.parametrize("guard", [pytest.param(g, id=g.id) for g in guards()])
def test_speedup_over_fp32_holds(guard: Guard, ws, quantized, test_split, request, record_property) -> None:
    def measure() -> float:
        return measure_guard(ws.fp32(guard.cell.backend_spec.format), quantized(guard.cell), guard, test_split.images)

    regen = request.config.getoption("force_regen") or request.config.getoption("regen_all")
    verdict = guard_speed(guard.id, measure, baseline(), TOLERANCE, regen)
    record_property("ratio", round(verdict.ratio, 4))
    enforce(verdict)


GUARD = "resnet8-onnxruntime-u8s8-minmax-per_channel-on-onnxruntime-b256"
COMMITTED = {GUARD: 2.0}  # with TOLERANCE 0.12: holds from 1.76x to 2.24x


def judged(*ratios: float, committed: dict[str, float] = COMMITTED, regen: bool = False) -> SpeedVerdict:
    return judge_speed(committed, GUARD, list(ratios), TOLERANCE, Path("x86_64-avx512vnni.yml"), regen)


@pytest.mark.parametrize("ratio", [1.7601, 2.0, 2.2399])
def test_a_ratio_within_tolerance_holds(ratio: float) -> None:
    verdict = judged(ratio)
    assert (verdict.outcome, verdict.passed, verdict.writes, verdict.warns) == ("holds", True, False, False)


def test_just_below_tolerance_is_measured_again_and_fails_when_slow_three_times() -> None:
    assert judged(1.7599).outcome == "remeasure"
    assert judged(1.7599, 1.70).outcome == "remeasure"
    verdict = judged(1.7599, 1.70, 1.75)
    assert (verdict.outcome, verdict.passed, verdict.writes) == ("slower", False, False)
    assert "1.76x, 1.70x, 1.75x FP32, committed 2.00x for x86_64-avx512vnni (tolerance 12%)" in verdict.message


def test_a_slow_guard_is_measured_again_only_after_a_pause(tmp_path: Path) -> None:
    baseline = tmp_path / "x86_64-avx512vnni.yml"
    baseline.write_text(yaml.safe_dump(COMMITTED))
    events: list[str] = []
    ratios = iter([1.5, 1.6, 1.98])

    def measure() -> float:
        events.append("measure")
        return next(ratios)

    verdict = guard_speed(GUARD, measure, baseline, TOLERANCE, pause=lambda: events.append("pause"))
    assert events == ["measure", "pause", "measure", "pause", "measure"]
    assert (verdict.outcome, verdict.ratio) == ("holds", 1.98)


def test_a_slow_measurement_then_a_normal_one_passes() -> None:
    verdict = judged(0.70, 1.98)
    assert (verdict.outcome, verdict.ratio, verdict.passed) == ("holds", 1.98, True)


def test_just_above_tolerance_passes_reported_as_faster() -> None:
    assert judged(2.2399).outcome == "holds"
    verdict = judged(2.2401)
    assert (verdict.outcome, verdict.passed, verdict.writes, verdict.warns) == ("faster", True, False, True)
    assert "2.24x FP32, committed 2.00x" in verdict.message


def test_a_guard_without_committed_ratio_passes_new_and_is_written() -> None:
    verdict = judged(0.5, committed={})  # no ratio to hold it to: even a slow one is the new CPU's baseline
    assert (verdict.outcome, verdict.passed, verdict.writes, verdict.warns) == ("new", True, True, True)
    assert "new (no committed ratio for this CPU); written to x86_64-avx512vnni.yml" in verdict.message


def test_force_regen_rewrites_a_committed_ratio() -> None:
    verdict = judged(1.0, regen=True)
    assert (verdict.outcome, verdict.passed, verdict.writes) == ("rewritten", True, True)
    assert "(was 2.00x)" in verdict.message


def test_a_new_cpu_passes_writes_its_ratios_and_warns(tmp_path: Path) -> None:
    baseline = tmp_path / "speed" / "x86_64-newcpu.yml"
    measurements = itertools.count(1.5, 0.25)
    for guard_id in ("guard-b1", "guard-b256"):
        with pytest.warns(BaselineChanged, match=f"{guard_id}: .*new .*written to {baseline}"):
            enforce(guard_speed(guard_id, lambda: next(measurements), baseline, TOLERANCE))
    assert yaml.safe_load(baseline.read_text()) == {"guard-b1": 1.5, "guard-b256": 1.75}
    # the next run holds the new CPU to what it wrote
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enforce(guard_speed("guard-b1", lambda: 1.45, baseline, TOLERANCE))
    with pytest.raises(pytest.fail.Exception, match="guard-b1: 8-bit runs 1.00x, 1.10x, 1.05x FP32"):
        enforce(guard_speed("guard-b1", iter([1.0, 1.1, 1.05]).__next__, baseline, TOLERANCE, pause=lambda: None))


def test_committed_ratios_name_every_guard() -> None:
    ids = {g.id for g in guards()}
    for path in sorted((Path(__file__).parent / "baselines" / "speed").glob("*.yml")):
        assert set(yaml.safe_load(path.read_text())) == ids, path.name
