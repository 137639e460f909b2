"""Speed guards: each backend's default cell against FP32, one thread, interleaved, at batch 1 and 256.

An upgrade that loses the int8 kernels (say u8s8 from 2x FP32 to 1x) keeps every accuracy check green;
these fail it. The ratio (8-bit over FP32 throughput, median of per-round ratios, ``PairedTimer``) is
compared with the committed ratio for this CPU (``tests/baselines/speed/<machine>-<capability>.yml``):
slower by more than ``TOLERANCE`` in two measurements fails, faster by more is reported. A CPU without a
baseline gets one written, and the run fails once so that someone reviews and commits it.
``tox -e speed`` runs them.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import pytest
import yaml

from ptq_core.baselines import BaselineChanged
from ptq_core.platform import cpu_capability
from ptq_core.speed import Guard, guards, measure_guard

BASELINE = Path(__file__).parent / "baselines" / "speed" / f"{platform.machine()}-{cpu_capability()}.yml"
# Ten quiet runs of this module on the development machine (2-core EPYC, AVX-512 VNNI): the widest
# run-to-run spread of a guard, (max - min) / median, was 11.6 % (NNCF on OpenVINO, batch 256); no run fell
# more than 5.2 % below its guard's median. The committed ratios are those medians; the tolerance is the
# widest spread, rounded up to a whole percent. Losing the VNNI kernels costs u8s8 half its speed-up.
TOLERANCE = 0.12

pytestmark = pytest.mark.speed


@pytest.mark.parametrize("guard", [pytest.param(g, id=g.id) for g in guards()])
def test_speedup_over_fp32_holds(guard: Guard, ws, quantized, test_split, request, record_property) -> None:
    def measure() -> float:
        return measure_guard(ws.fp32(guard.cell.backend_spec.format), quantized(guard.cell), guard, test_split.images)

    ratio = measure()
    committed = yaml.safe_load(BASELINE.read_text()) if BASELINE.exists() else {}
    if guard.id in committed and ratio < committed[guard.id] * (1 - TOLERANCE):
        # A lost kernel is slow in every measurement; a burst of load from another process is not. Seen once
        # here: 0.70x for a guard whose 13 other runs gave 1.55-1.58x.
        ratio = max(ratio, measure())
    record_property("ratio", round(ratio, 4))
    if guard.id not in committed or request.config.getoption("force_regen"):
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        fresh = yaml.safe_load(BASELINE.read_text()) if BASELINE.exists() else {}  # another guard may have written
        BASELINE.write_text(yaml.safe_dump({**fresh, guard.id: round(ratio, 3)}, sort_keys=True))
        pytest.fail(f"{guard.id}: no committed speed ratio for this CPU; wrote {ratio:.2f}x to {BASELINE}: review it")
    expected = committed[guard.id]
    assert ratio >= expected * (1 - TOLERANCE), (
        f"{guard.id}: 8-bit runs {ratio:.2f}x FP32, committed {expected:.2f}x for {BASELINE.stem} "
        f"(tolerance {TOLERANCE:.0%}): the 8-bit kernels got slower, or FP32 ones faster"
    )
    if ratio > expected * (1 + TOLERANCE):
        warnings.warn(BaselineChanged(f"{guard.id}: {ratio:.2f}x FP32, committed {expected:.2f}x"), stacklevel=1)
