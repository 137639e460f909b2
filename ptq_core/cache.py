"""Build an artifact once: across pytest-xdist workers (file lock) and across runs (a recorded key).

Next to each artifact ``X`` lie ``X.key.json`` (the key it was built under and its sha256) and
``X.lock``. An artifact is reused only when the recorded key equals the wanted one and the file still
has the recorded digest. A build writes a temporary file, renames it into place, and only then
records the key, so an interrupted build leaves nothing a later run would use; what a killed build left
(``.X.PID.tmp`` files, ONNX Runtime's work folders) is removed once its PID is no longer alive.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from ptq_core.errors import PTQError
from ptq_core.sources import file_digest

BUILD_LOG = "builds.log"
PACKAGE = Path(__file__).parent
# how the suite's models folder is chosen; a folder named with name_folder (ptq run's --cache) says its own
DEFAULT_OPTION = "--models-dir DIR or PTQ_MODELS_DIR"
_FOLDER_OPTIONS: dict[Path, str] = {}
TEMPORARY = re.compile(r"\..+\.(\d+)\.tmp")  # .NAME.PID.tmp: a build's file, or a work folder (backends)


def name_folder(folder: Path | str, option: str) -> None:
    """Errors about writing under ``folder`` tell the user to change ``option`` (e.g. "--cache DIR"), the
    option of the command that chose it, instead of the suite's --models-dir / PTQ_MODELS_DIR."""
    _FOLDER_OPTIONS[Path(os.path.abspath(folder))] = option


def _option_for(path: Path) -> str:
    path = Path(os.path.abspath(path))
    chosen = [f for f in _FOLDER_OPTIONS if path.is_relative_to(f)]
    return _FOLDER_OPTIONS[max(chosen, key=lambda f: len(f.parts))] if chosen else DEFAULT_OPTION


def remove_stale_temporaries(folder: Path, name: str = "") -> None:
    """Remove the ``.NAME.PID.tmp`` files and folders under ``folder`` (only those of ``name`` when given, and
    then only at its level) whose process is no longer alive: what a run killed while building left."""
    try:
        found = (
            list(folder.rglob(".*.tmp"))
            if not name
            else [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]
        )
    except OSError:
        return
    for path in found:
        match = TEMPORARY.fullmatch(path.name)
        if not match or int(match[1]) == os.getpid() or _running(int(match[1])):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass


def _running(pid: int) -> bool:
    """Whether ``pid`` is a running process: a zombie (a killed worker its new parent has not reaped yet) is not."""
    from ptq_core.output import _alive

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _alive(pid)
    except (OSError, IndexError):
        return _alive(pid)


class StaleArtifactWarning(UserWarning):
    """A cached artifact no longer matches the digest recorded when it was built."""


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Python's and numpy's versions, and those of ``names`` (distribution names; "absent" if missing)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in sorted({"numpy", *names})}}


@functools.cache  # reading a distribution's metadata costs ~1 ms, and every cache lookup asks
def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def code_digest(modules: Iterable[str]) -> str:
    """Digest of the ptq_core modules (``"formats/onnx"``, ``"eval"``) that decide an artifact or a result."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        path = PACKAGE / f"{name}.py"
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return h.hexdigest()[:16]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".key.json")


def built_key(path: Path) -> dict[str, Any]:
    """The key the artifact at ``path`` was built under (its ``.key.json`` record)."""
    record = _read_sidecar(path)
    if record is None or not isinstance(record.get("key"), dict):
        raise PTQError(f"{path} has no readable build record {_sidecar(path).name}: delete both and rebuild")
    key: dict[str, Any] = record["key"]
    return key


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _normalised(key: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(key, sort_keys=True))
    return result


def build_once(path: Path, key: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
    """Return ``path`` holding the artifact for ``key``; ``build(tmp)`` writes it only when needed."""
    key = _normalised(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path.with_name(path.name + ".lock")))
        lock.acquire()
    except OSError as exc:
        raise PTQError(
            f"cannot write to {path.parent} ({exc.strerror or exc}): make it writable, or choose a writable folder "
            f"with {_option_for(path)}"
        ) from exc
    try:
        record = _read_sidecar(path)
        if record is not None and record.get("key") == key and path.is_file():
            if file_digest(path) == record.get("sha256"):
                return path
            warnings.warn(
                f"{path} was altered or truncated after it was built (digest mismatch): rebuilding",
                StaleArtifactWarning,
                stacklevel=2,
            )
        _sidecar(path).unlink(missing_ok=True)
        remove_stale_temporaries(path.parent, path.name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        started = time.perf_counter()
        try:
            build(tmp)
            digest = file_digest(tmp)
            os.replace(tmp, path)
            write_atomic(_sidecar(path), json.dumps({"key": key, "sha256": digest}, indent=1, sort_keys=True))
        except OSError as exc:
            raise PTQError(
                f"building {path} failed: {exc}. Check that {path.parent} is writable and has "
                f"free space, or choose another folder with {_option_for(path)}"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        with open(path.parent / BUILD_LOG, "a") as log:
            # when, by which process, what, its digest, and the seconds its build took: what a cold run spent where
            log.write(f"{time.time():.3f} {os.getpid()} {path.name} {digest} {time.perf_counter() - started:.3f}\n")
        return path
    finally:
        lock.release()


def write_atomic(path: Path, text: str) -> None:
    """``text`` at ``path``, never half-written: written beside it under a temporary name, then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
