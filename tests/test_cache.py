"""build_once: one build per key, reused across runs, never a half-written artifact."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ptq_core.cache import BUILD_LOG, StaleArtifactWarning, build_once


class Builder:
    def __init__(self, payload: bytes = b"model") -> None:
        self.calls = 0
        self.payload = payload

    def __call__(self, tmp: Path) -> None:
        self.calls += 1
        tmp.write_bytes(self.payload)


def test_second_call_with_same_key_reuses(tmp_path: Path) -> None:
    build = Builder()
    path = tmp_path / "m.onnx"
    assert build_once(path, {"v": 1}, build).read_bytes() == b"model"
    build_once(path, {"v": 1}, build)
    assert build.calls == 1
    assert len((tmp_path / BUILD_LOG).read_text().splitlines()) == 1


def test_the_build_log_says_what_each_build_took(tmp_path: Path) -> None:
    def slow(tmp: Path) -> None:
        time.sleep(0.25)
        tmp.write_bytes(b"model")

    path = build_once(tmp_path / "m.onnx", {"v": 1}, slow)
    build_once(path, {"v": 1}, slow)  # reused: not a build
    (line,) = (tmp_path / BUILD_LOG).read_text().splitlines()
    _, pid, name, digest, seconds = line.split()
    assert (int(pid), name, digest) == (os.getpid(), "m.onnx", hashlib.sha256(b"model").hexdigest())
    assert 0.25 <= float(seconds) < 5, line


def test_changed_key_rebuilds(tmp_path: Path) -> None:
    build = Builder()
    build_once(tmp_path / "m.onnx", {"versions": {"onnxruntime": "1.32.0"}}, build)
    build_once(tmp_path / "m.onnx", {"versions": {"onnxruntime": "1.33.0"}}, build)
    assert build.calls == 2


def test_altered_artifact_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    build = Builder()
    path = build_once(tmp_path / "m.onnx", {"v": 1}, build)
    path.write_bytes(b"mod")  # truncated after it was written
    with pytest.warns(StaleArtifactWarning, match="altered or truncated"):
        build_once(path, {"v": 1}, build)
    assert build.calls == 2 and path.read_bytes() == b"model"


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "m.onnx", {"v": 1}, crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.lock"]
    build = Builder()
    build_once(tmp_path / "m.onnx", {"v": 1}, build)
    assert build.calls == 1


def test_failed_rebuild_does_not_leave_the_old_key(tmp_path: Path) -> None:
    path = build_once(tmp_path / "m.onnx", {"v": 1}, Builder())

    def crash(tmp: Path) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_once(path, {"v": 2}, crash)
    build = Builder(b"v1 again")
    build_once(path, {"v": 1}, build)  # the v1 record was dropped before the v2 build began
    assert build.calls == 1


def test_stale_artifact_is_rebuilt_with_a_warning_under_the_suites_own_filters(tmp_path: Path) -> None:
    """pytest.ini turns warnings into errors; the documented stale-artifact rebuild must still happen."""
    test = tmp_path / "test_stale.py"
    test.write_text(
        textwrap.dedent("""
            from ptq_core.cache import build_once

            def test_rebuild(tmp_path):
                path = build_once(tmp_path / "m.onnx", {"v": 1}, lambda t: t.write_bytes(b"model"))
                path.write_bytes(b"mod")
                build_once(path, {"v": 1}, lambda t: t.write_bytes(b"model"))
                assert path.read_bytes() == b"model"
        """)
    )
    ini = Path(__file__).parents[1] / "pytest.ini"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-c", str(ini)]
    proc = subprocess.run([*args, "--rootdir", str(tmp_path), str(test)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "StaleArtifactWarning" in proc.stdout and "1 passed" in proc.stdout
