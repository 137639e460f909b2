"""The CPU's int8 peak: the yardstick for how close a deployment comes to what the core can do.

    peak (int8 MACs/s per core) = MACs per instruction   (of the unit with the most int8 MACs per cycle the flags name)
                                x instructions per cycle (the measured rate, rounded to whole pipes)
                                x clock                  (what the core runs at under load)

The unit (``UNITS``, most MACs per cycle first): AMX-INT8 TDPBUSD (16,384 MACs per instruction), AVX-512 VNNI
VPDPBUSD zmm (64), AVX-VNNI VPDPBUSD ymm (32), arm64 SDOT (16). Flags say the first factor. They do not say
the other two, and the nominal clock in /proc/cpuinfo is not the one the core runs at (2.6 GHz nominal on the
development machine, 3.4-4.4 GHz measured), so both are measured by ``ptq_core/probes/int8_peak.c``, compiled
with the system's C compiler for the unit. Its clock is a chain of dependent register-register adds: recent
Intel cores fold adds of an immediate at rename (such a chain read 18.9 GHz on the AMX Xeon).

A probe figure outside physical sense is refused: a clock outside ``MIN_GHZ``-``MAX_GHZ``, more instructions
per cycle than the unit's ``max_per_cycle``, or less than half of one pipe. The peak is then unknown, with the
reason (``peak_unknown_reason``), as it is when no unit or no compiler is there or the probe fails.
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ptq_core.machine import cpu_flags

PROBE = Path(__file__).with_name("probes") / "int8_peak.c"
# The slowest clock a loaded core runs at (the lowest P-state of x86 and arm64 server and desktop parts is
# 0.8 GHz or more) and above the fastest any ships (6.2 GHz, Core i9-14900KS's boost).
MIN_GHZ, MAX_GHZ = 0.8, 6.5
# A rate the unit's pipes allow may read this much above them: the rate is timed against the scalar clock,
# and best-of-9 trials of each scatter by up to 1.3 % on the development machine (VPDPBUSD zmm: 0.989-1.013).
RATE_SLACK = 0.05


@dataclass(frozen=True)
class Unit:
    isa: str
    instruction: str
    flag: str  # in /proc/cpuinfo's flags (x86) or Features (arm64)
    macs_per_instruction: int
    pipe: float  # instructions per cycle one pipe issues: the measured rate is rounded to whole pipes
    max_per_cycle: float  # the most any core issues; the source is beside each unit
    define: str  # the probe's -D
    cflags: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.isa} {self.instruction}"


UNITS = (
    Unit(  # Intel's optimization manual (Sapphire and Granite Rapids): one TDPBUSD per 16 cycles
        "AMX-INT8",
        "TDPBUSD",
        "amx_int8",
        macs_per_instruction=16 * 16 * 64,
        pipe=1 / 16,
        max_per_cycle=1 / 16,
        define="PROBE_AMX_INT8",
        cflags=("-mamx-tile", "-mamx-int8"),
    ),
    Unit(  # two 512-bit pipes at most (Intel server cores since Ice Lake, Zen 5; Zen 4 gangs its 256-bit ones: 1)
        "AVX-512 VNNI",
        "VPDPBUSD zmm",
        "avx512_vnni",
        macs_per_instruction=64,
        pipe=1,
        max_per_cycle=2,
        define="PROBE_AVX512_VNNI",
        cflags=("-mavx512f", "-mavx512vnni"),
    ),
    Unit(  # two at most: the two vector multiply pipes of Intel's P and E cores and of AMD's
        "AVX-VNNI",
        "VPDPBUSD ymm",
        "avx_vnni",
        macs_per_instruction=32,
        pipe=1,
        max_per_cycle=2,
        define="PROBE_AVX_VNNI",
        cflags=("-mavxvnni",),
    ),
    Unit(  # Arm's Neoverse V1 and V2 optimization guides: 4 vector pipes issue SDOT (N1, N2, A76-class: 2)
        "arm64",
        "SDOT",
        "asimddp",
        macs_per_instruction=16,
        pipe=1,
        max_per_cycle=4,
        define="PROBE_SDOT",
        cflags=("-march=armv8.2-a+dotprod",),
    ),
)


@dataclass(frozen=True)
class Peak:
    macs_per_instruction: int
    instructions_per_cycle: float  # the measured rate, rounded to the whole pipes it reveals
    ghz: float
    measured_rate: float  # instructions per cycle as measured
    isa: str = "AVX-512 VNNI"  # the one unit counted before the others were
    instruction: str = "VPDPBUSD zmm"

    @property
    def unit(self) -> str:
        return f"{self.isa} {self.instruction}"

    @property
    def gmacs_per_core(self) -> float:
        return self.macs_per_instruction * self.instructions_per_cycle * self.ghz

    @property
    def formula(self) -> str:
        per_cycle = Fraction(self.instructions_per_cycle).limit_denominator(64)
        return (
            f"{self.isa}: {self.macs_per_instruction} MACs per {self.instruction} x {per_cycle} per cycle "
            f"(measured {self.measured_rate:#.3g}) x {self.ghz:.2f} GHz (measured) = {self.gmacs_per_core:.0f} "
            "GMAC/s per core"
        )


@dataclass(frozen=True)
class Unknown:
    reason: str


class ProbeFailed(Exception):
    """The probe could not say: no compiler, it did not compile or run, or its output is not two numbers."""


ProbeRunner = Callable[[Unit], tuple[float, float]]  # a unit -> (GHz, instructions per cycle)


def flags_here() -> set[str]:
    """x86 flags (``cpu_flags``) and arm64 Features, which ``cpu_flags`` does not read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    features = next((x for x in text.splitlines() if x.startswith("Features")), "")
    return set(cpu_flags()) | set(features.split(":")[-1].split())


def choose_unit(flags: Iterable[str]) -> Unit | None:
    """The unit with the most int8 MACs per cycle among those the flags name."""
    present = set(flags)
    return next((unit for unit in UNITS if unit.flag in present), None)


def peak_from(unit: Unit, ghz: float, rate: float) -> Peak | Unknown:
    """The peak from the probe's figures, or why they are refused."""
    if not MIN_GHZ <= ghz <= MAX_GHZ:
        return Unknown(f"the probe's clock, {ghz:.2f} GHz, is outside {MIN_GHZ}-{MAX_GHZ} GHz")
    if rate > unit.max_per_cycle * (1 + RATE_SLACK):
        return Unknown(
            f"the probe's rate, {rate:.4g} {unit.instruction} per cycle, is more than the {unit.max_per_cycle:.4g} "
            f"any {unit.isa} core issues (+{RATE_SLACK:.0%} for timing)"
        )
    pipes = round(rate / unit.pipe)
    if pipes < 1:
        return Unknown(
            f"the probe's rate, {rate:.4g} {unit.instruction} per cycle, is less than half of one pipe's "
            f"{unit.pipe:.4g}"
        )
    return Peak(unit.macs_per_instruction, pipes * unit.pipe, ghz, rate, unit.isa, unit.instruction)


def run_probe(unit: Unit, compiler: str | None = None) -> tuple[float, float]:
    """Compile ``int8_peak.c`` for ``unit`` and run it: (GHz, instructions per cycle)."""
    cc = compiler or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise ProbeFailed("no C compiler (cc, gcc or clang) for the probe")
    with tempfile.TemporaryDirectory(prefix="ptq_peak_") as tmp:
        exe = Path(tmp) / "int8_peak"
        build = _run([cc, "-O2", f"-D{unit.define}", *unit.cflags, str(PROBE), "-o", str(exe)], f"{cc} for the probe")
        if build.returncode != 0:
            raise ProbeFailed(f"{cc} cannot build the {unit.name} probe: {_first_error(build.stderr)}")
        run = _run([str(exe)], f"the {unit.name} probe")
    if run.returncode < 0:
        raise ProbeFailed(f"the {unit.name} probe was killed by {signal.Signals(-run.returncode).name}")
    if run.returncode != 0:
        raise ProbeFailed(f"the {unit.name} probe exited with {run.returncode}: {_first_error(run.stderr)}")
    try:
        ghz, rate = map(float, run.stdout.split())
    except ValueError as e:
        raise ProbeFailed(f"the {unit.name} probe printed {run.stdout.strip()!r}, not '<GHz> <per cycle>'") from e
    return ghz, rate


def _run(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        raise ProbeFailed(f"{what} ran over {e.timeout:.0f} s") from e
    except OSError as e:
        raise ProbeFailed(f"cannot run {what}: {e}") from e


def _first_error(stderr: str) -> str:
    lines = stderr.strip().splitlines() or ["(no message)"]
    return next((line for line in lines if "error" in line), lines[-1])[:200]


def probe(flags: Iterable[str] | None = None, run: ProbeRunner = run_probe) -> Peak | Unknown:
    """The peak of the CPU with ``flags`` (this one's by default), its figures from ``run``."""
    unit = choose_unit(flags_here() if flags is None else flags)
    if unit is None:
        return Unknown("no int8 dot-product unit in the CPU flags (" + ", ".join(u.flag for u in UNITS) + ")")
    try:
        ghz, rate = run(unit)
    except ProbeFailed as e:
        return Unknown(str(e))
    return peak_from(unit, ghz, rate)


def measure(compiler: str | None = None) -> Peak | None:
    """This CPU's peak, measured afresh; None when it is unknown (``probe`` says why)."""
    result = probe(run=functools.partial(run_probe, compiler=compiler))
    return result if isinstance(result, Peak) else None


@functools.cache
def probed() -> Peak | Unknown:
    return probe()


def int8_peak() -> Peak | None:
    result = probed()
    return result if isinstance(result, Peak) else None


def peak_unknown_reason() -> str | None:
    result = probed()
    return result.reason if isinstance(result, Unknown) else None
