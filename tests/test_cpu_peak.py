"""The int8 peak: which unit the flags choose, the formula from the probe's figures, the figures refused as
outside physical sense, and the real probe on this CPU. The probe runner is injected: no AMX needed."""

from __future__ import annotations

import pytest

from ptq_core import cpu_peak
from ptq_core.cpu_peak import Peak, ProbeFailed, Unit, Unknown, choose_unit, peak_from, probe

UNIT = {u.flag: u for u in cpu_peak.UNITS}
AMX, AVX512_VNNI, AVX_VNNI, SDOT = UNIT["amx_int8"], UNIT["avx512_vnni"], UNIT["avx_vnni"], UNIT["asimddp"]


def runner(ghz: float, rate: float):
    def run(unit: Unit) -> tuple[float, float]:
        return ghz, rate

    return run


@pytest.mark.parametrize(
    ("flags", "unit"),
    [
        (["avx2", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8"], AMX),
        (["avx2", "avx512f", "avx512_vnni", "avx_vnni"], AVX512_VNNI),
        (["avx2", "avx_vnni"], AVX_VNNI),
        (["fp", "asimd", "asimddp"], SDOT),
        (["avx2", "fma", "avx512f", "avx512bw", "amx_tile"], None),
        ([], None),
    ],
)
def test_the_unit_with_most_macs_per_cycle_the_flags_name(flags: list[str], unit: Unit | None) -> None:
    assert choose_unit(flags) is unit


def test_no_unit_is_an_unknown_peak_saying_so() -> None:
    result = probe(["avx2", "fma"], run=runner(4.0, 1.0))
    assert isinstance(result, Unknown)
    assert "no int8 dot-product unit in the CPU flags" in result.reason


@pytest.mark.parametrize(
    ("flags", "ghz", "rate", "formula", "gmacs"),
    [
        (
            ["amx_int8", "avx512_vnni"],
            2.0,
            0.0610,
            "AMX-INT8: 16384 MACs per TDPBUSD x 1/16 per cycle (measured 0.0610) x 2.00 GHz (measured) = 2048 GMAC/s",
            2048,
        ),
        (
            ["avx512_vnni"],
            4.2,
            1.97,
            "AVX-512 VNNI: 64 MACs per VPDPBUSD zmm x 2 per cycle (measured 1.97) x 4.20 GHz (measured) = 538 GMAC/s",
            537.6,
        ),
        (
            ["avx512_vnni"],
            3.65,
            1.004,
            "AVX-512 VNNI: 64 MACs per VPDPBUSD zmm x 1 per cycle (measured 1.00) x 3.65 GHz (measured) = 234 GMAC/s",
            233.6,
        ),
        (
            ["avx_vnni"],
            4.8,
            1.6,
            "AVX-VNNI: 32 MACs per VPDPBUSD ymm x 2 per cycle (measured 1.60) x 4.80 GHz (measured) = 307 GMAC/s",
            307.2,
        ),
        (
            ["asimddp"],
            3.0,
            3.9,
            "arm64: 16 MACs per SDOT x 4 per cycle (measured 3.90) x 3.00 GHz (measured) = 192 GMAC/s",
            192,
        ),
    ],
)
def test_the_formula_names_the_unit_and_its_factors(flags, ghz, rate, formula, gmacs) -> None:
    peak = probe(flags, run=runner(ghz, rate))
    assert isinstance(peak, Peak)
    assert peak.formula.startswith(formula)
    assert peak.gmacs_per_core == pytest.approx(gmacs)


@pytest.mark.parametrize(("ghz", "accepted"), [(0.79, False), (0.8, True), (6.5, True), (6.51, False)])
def test_a_clock_outside_physical_sense_is_refused(ghz: float, accepted: bool) -> None:
    result = peak_from(AVX512_VNNI, ghz, 1.0)
    assert isinstance(result, Peak) is accepted
    if not accepted:
        assert isinstance(result, Unknown)
        assert f"clock, {ghz:.2f} GHz, is outside 0.8-6.5 GHz" in result.reason


@pytest.mark.parametrize(
    ("unit", "rate", "accepted"),
    [
        (AVX512_VNNI, 2.1, True),  # 2 pipes, read 5 % high
        (AVX512_VNNI, 2.11, False),
        (AVX_VNNI, 2.1, True),
        (AVX_VNNI, 2.11, False),
        (AMX, 1 / 16 * 1.05, True),
        (AMX, 0.0660, False),
        (SDOT, 4.2, True),
        (SDOT, 4.21, False),
    ],
)
def test_more_instructions_per_cycle_than_the_unit_issues_is_refused(unit: Unit, rate: float, accepted: bool) -> None:
    result = peak_from(unit, 3.0, rate)
    assert isinstance(result, Peak) is accepted
    if not accepted:
        assert isinstance(result, Unknown)
        assert f"{rate:.4g} {unit.instruction} per cycle, is more than the {unit.max_per_cycle:.4g}" in result.reason


@pytest.mark.parametrize(("unit", "rate"), [(AVX512_VNNI, 0.49), (AMX, 0.03)])
def test_less_than_half_a_pipe_is_refused(unit: Unit, rate: float) -> None:
    result = peak_from(unit, 3.0, rate)
    assert isinstance(result, Unknown)
    assert "less than half of one pipe" in result.reason


def test_a_failed_probe_is_an_unknown_peak_with_its_reason() -> None:
    def sigill(unit: Unit) -> tuple[float, float]:
        raise ProbeFailed(f"the {unit.name} probe was killed by SIGILL")

    assert probe(["amx_int8"], run=sigill) == Unknown("the AMX-INT8 TDPBUSD probe was killed by SIGILL")


def test_the_peak_is_json_ready_for_the_bench_report() -> None:
    import json

    peak = peak_from(AMX, 2.0, 0.0625)
    assert isinstance(peak, Peak)
    assert json.loads(json.dumps({**peak.__dict__, "gmacs_per_core": peak.gmacs_per_core, "formula": peak.formula}))


@pytest.mark.skipif("avx512_vnni" not in cpu_peak.flags_here(), reason="the CPU has no AVX-512 VNNI")
def test_the_probe_on_this_cpu_is_sane() -> None:
    result = probe()
    assert isinstance(result, Peak), result
    assert result.unit in ("AMX-INT8 TDPBUSD", "AVX-512 VNNI VPDPBUSD zmm")
    assert 0.8 <= result.ghz <= 6.5
    assert result.instructions_per_cycle in ((1 / 16,) if "AMX" in result.unit else (1, 2))


def test_a_probe_that_cannot_run_here_is_an_unknown_peak() -> None:
    # SDOT does not build for x86, and on arm64 the AVX-512 probe does not
    other = AVX512_VNNI if "asimddp" in cpu_peak.flags_here() else SDOT
    result = probe([other.flag])
    assert isinstance(result, Unknown)
    assert f"cannot build the {other.name} probe" in result.reason
