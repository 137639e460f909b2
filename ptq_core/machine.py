"""The machine a result belongs to: the CPU capability that picks the int8 kernels, and baseline ids."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from ptq_core import cache


def cpu_flags() -> list[str]:
    return list(_flags())


@functools.cache  # read once a process: collection asks for every cell's known failures (6,000 times)
def _flags() -> tuple[str, ...]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return tuple(sorted(f for f in line.split(":")[-1].split() if f.startswith(("avx", "amx", "fma", "sse4"))))


def cpu_capability() -> str:
    """The widest x86 int8 dot-product path the CPU offers: it decides ORT's, oneDNN's and OpenVINO's kernels."""
    flags = set(cpu_flags())
    for flag, name in (
        ("amx_int8", "amx"),
        ("avx512_vnni", "avx512vnni"),
        ("avx_vnni", "avxvnni"),
        ("avx512bw", "avx512"),
        ("avx2", "avx2"),
    ):
        if flag in flags:
            return name
    return platform.machine()


def libraries_of(cell: object, runtime: str) -> tuple[str, ...]:
    """Every library whose version can change the cell's predictions on ``runtime``: the FP32 export's,
    the backend's and the runtime's (plus numpy, always)."""
    from ptq_core.formats import FORMATS
    from ptq_core.runtimes import get_runtime

    backend = cell.backend_spec  # type: ignore[attr-defined]
    return tuple(
        sorted({*FORMATS[backend.source].libraries, *backend.libraries, *get_runtime(runtime).libraries, "numpy"})
    )


def baseline_id(cell: object, runtime: str) -> str:
    """``x86_64-avx512vnni-numpy2.4.6-onnx1.23.2-onnxruntime1.32.0-...``: a cell's baseline folder name."""
    versions = cache.library_versions(libraries_of(cell, runtime))
    libs = "-".join(f"{name}{versions[name]}" for name in libraries_of(cell, runtime))
    return f"{platform.machine()}-{cpu_capability()}-{libs}"
