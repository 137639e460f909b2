"""Output folders (``ptq run``, ``ptq tune``, ``ptq bench``): filled beside their final name and renamed into
place, so a reader never sees one half-written; a folder that is not an earlier output is never replaced."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ptq_core.errors import PTQError


def check_replaceable(out: Path, marker: str) -> None:
    """``out`` is new, empty, or an earlier output (it holds ``marker``); else a PTQError."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise PTQError(
            f"--out {out} exists and is not an output folder of this command: name a new or empty folder (a "
            f"folder holding {marker} from an earlier run is replaced)"
        )


def write_folder(out: Path, marker: str, fill: Callable[[Path], object]) -> None:
    """``fill(folder)`` writes the output into a folder beside ``out``, which then replaces ``out``."""
    check_replaceable(out, marker)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        fill(tmp)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as exc:
        raise PTQError(
            f"cannot write --out {out} ({exc.strerror or exc}): choose a writable folder with free space"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
