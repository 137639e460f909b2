"""Output folders (``ptq run``, ``ptq tune``, ``ptq bench``): filled beside their final name and renamed into
place, so a reader never sees one half-written.

A folder is replaced only when it holds the marker file this module writes into every output
(:data:`MARKER`: the tool, the command and a run id), never because of a file name a user might have
too: a project folder that happens to hold a ``results.json`` is refused, its files left alone.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ptq_core.errors import PTQError

MARKER = ".ptq-output.json"
TOOL = "ptq-suite"


def _command(command: str) -> str:
    # a caller may still name its command by its main file, as the marker used to be ("tune.json": tune)
    return command.removesuffix(".json")


def _marker_command(out: Path) -> str | None:
    """The command that wrote ``out`` according to its marker, or None when it holds no marker of this tool."""
    marker = out / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("tool") != TOOL or not isinstance(record.get("command"), str):
        return None
    return str(record["command"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or not a pid this system has): leave its folders alone
    return True


def clear_stale(out: Path) -> None:
    """Remove ``.OUT.PID.tmp`` / ``.OUT.PID.old`` folders beside ``out`` left by a run that was killed (its
    PID is no longer alive). An ``.old`` one is the earlier output, moved aside just before the new one
    took its place: when ``out`` itself is missing, the run died between the two renames and it is put back."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(\d+)\.(tmp|old)")
    try:
        found = [(p, int(m[1]), m[2]) for p in out.parent.iterdir() if (m := pattern.fullmatch(p.name))]
    except OSError:
        return
    stale = [(p, kind) for p, pid, kind in found if pid != os.getpid() and not _alive(pid)]
    olds = sorted((p for p, kind in stale if kind == "old" and p.is_dir()), key=lambda p: p.stat().st_mtime)
    if olds and not out.exists():
        try:
            os.replace(olds[-1], out)
        except OSError:
            pass
    for path, _ in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _writable_ancestor(out: Path) -> Path:
    """The folder that must be writable to create or replace ``out``: its nearest existing ancestor."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PTQError(f"--out {out}: {parent} is a file, not a folder: name --out in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PTQError(f"--out {out}: cannot create it, {parent} is not writable: name --out in a writable folder")
    return parent


def check_replaceable(out: Path, command: str, keep: Mapping[str, str | Path | None] | None = None) -> None:
    """``out`` can take the output of ``command`` (e.g. 'run'): new, empty, or an earlier output of
    ``command`` (it holds its marker), in a writable folder, and holding none of ``keep`` (option: path,
    e.g. ``{"--cache": cache}``: what must survive the replacement). Else a PTQError naming the fix.
    Also clears the temporary folders a killed run left beside it (:func:`clear_stale`)."""
    command = _command(command)
    resolved = out.resolve()
    if str(out) in ("", ".") or Path.cwd().resolve().is_relative_to(resolved):
        raise PTQError(
            f"--out {str(out)!r} is the current folder or holds it: name a folder of its own for the output, "
            f"e.g. --out {command}-output"
        )
    for option, path in (keep or {}).items():
        if path is not None and Path(path).resolve().is_relative_to(resolved):
            raise PTQError(
                f"{option} {path} is inside --out {out}, which is replaced by every run: name an --out folder that "
                f"does not hold {option}"
            )
    _writable_ancestor(Path(os.path.abspath(out)))
    clear_stale(Path(os.path.abspath(out)))
    if not out.exists():
        return
    if not out.is_dir():
        raise PTQError(f"--out {out} is a file: name a new or empty folder for the output")
    if not any(out.iterdir()):
        return
    written_by = _marker_command(out)
    if written_by is None:
        raise PTQError(
            f"--out {out} exists and is not an output folder of this command (it holds files but no {MARKER}, "
            f"which ptq writes into each output folder): its files are left alone. Name a new or empty folder, "
            f"e.g. --out {out.name}-{command}"
        )
    if written_by != command:
        raise PTQError(
            f"--out {out} is not an output folder of this command: it holds the output of ptq {written_by}, not "
            f"ptq {command}: name another folder, e.g. --out {out.name}-{command}"
        )


def write_folder(
    out: Path, command: str, fill: Callable[[Path], object], keep: Mapping[str, str | Path | None] | None = None
) -> None:
    """``fill(folder)`` writes the output of ``command`` into a folder beside ``out``, which then gets the
    marker and replaces ``out`` (see :func:`check_replaceable`)."""
    command = _command(command)
    check_replaceable(out, command, keep)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        fill(tmp)
        record = {"tool": TOOL, "command": command, "run_id": uuid.uuid4().hex, "pid": os.getpid()}
        record["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (tmp / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
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


def finite(value: Any) -> Any:
    """``value`` for ``json.dumps(..., allow_nan=False)``: every NaN or infinity (e.g. held-out accuracy when every
    scored image also calibrates) becomes None, written as null, so that any JSON parser reads the file."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return None
    return value
