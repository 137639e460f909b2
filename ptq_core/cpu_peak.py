"""The CPU's int8 peak: the yardstick for how close a deployment comes to what the core can do.

    peak (int8 MACs/s per core) = MACs per VNNI instruction   (flags: avx512_vnni -> 64 u8 x s8 per zmm VPDPBUSD)
                                x VNNI instructions per cycle (1 or 2: how many full 512-bit pipes the core has)
                                x clock                       (what the core runs at under load)

Flags say the first factor. They do not say the other two, and the nominal clock in /proc/cpuinfo is not
the one the core runs at (2.6 GHz nominal here, 4.1-4.3 GHz measured), so both are measured by
``ptq_core/probes/vnni_peak.c``, compiled with the system's C compiler.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ptq_core.platform import cpu_flags

PROBE = Path(__file__).with_name("probes") / "vnni_peak.c"
MACS_PER_INSTRUCTION = {"avx512_vnni": 64}  # VPDPBUSD zmm: 64 u8 x s8 products summed into 16 int32 lanes


@dataclass(frozen=True)
class Peak:
    macs_per_instruction: int
    instructions_per_cycle: int  # the measured rate, rounded to the whole pipes it reveals
    ghz: float
    measured_rate: float  # VPDPBUSD per cycle as measured

    @property
    def gmacs_per_core(self) -> float:
        return self.macs_per_instruction * self.instructions_per_cycle * self.ghz

    @property
    def formula(self) -> str:
        return (
            f"{self.macs_per_instruction} MACs per VPDPBUSD zmm x {self.instructions_per_cycle} per cycle "
            f"(measured {self.measured_rate:.2f}) x {self.ghz:.2f} GHz (measured) = {self.gmacs_per_core:.0f} "
            "GMAC/s per core"
        )


def measure(compiler: str | None = None) -> Peak | None:
    """Compile and run the probe; None on a CPU without AVX-512 VNNI or a machine without a C compiler."""
    if "avx512_vnni" not in cpu_flags():
        return None
    cc = compiler or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ptq_peak_") as tmp:
        exe = Path(tmp) / "vnni_peak"
        subprocess.run([cc, "-O2", "-mavx512f", "-mavx512vnni", str(PROBE), "-o", str(exe)], check=True)
        ghz, rate = map(float, subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split())
    return Peak(MACS_PER_INSTRUCTION["avx512_vnni"], max(1, round(rate)), ghz, rate)


@functools.cache
def int8_peak() -> Peak | None:
    return measure()
