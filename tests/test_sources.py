"""Finding data and weights: explicit path, environment, cache, then a verified download."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from ptq_core import sources
from ptq_core.errors import PTQError


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(sources.CIFAR10_ENV, raising=False)
    monkeypatch.delenv(sources.RESNET8_ENV, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(sources.CACHE_ENV, str(cache))
    return cache


def _archive(tmp_path: Path, folder: str = sources.CIFAR10_FOLDER) -> tuple[str, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{folder}/batches.meta")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"meta"))
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(buf.getvalue())
    return path.as_uri(), hashlib.md5(buf.getvalue()).hexdigest()


def test_explicit_path_wins_over_environment(no_env: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(sources.CIFAR10_ENV, str(tmp_path / "elsewhere"))
    assert sources.find_cifar10(tmp_path) == tmp_path


def test_environment_wins_over_cache(no_env: Path, tmp_path: Path, monkeypatch) -> None:
    (no_env / sources.CIFAR10_FOLDER).mkdir(parents=True)
    monkeypatch.setenv(sources.CIFAR10_ENV, str(tmp_path))
    assert sources.find_cifar10() == tmp_path


def test_cache_is_used_before_downloading(no_env: Path) -> None:
    (no_env / sources.CIFAR10_FOLDER).mkdir(parents=True)
    assert sources.find_cifar10(download=False) == no_env / sources.CIFAR10_FOLDER


def test_environment_pointing_nowhere_is_named(no_env: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(sources.CIFAR10_ENV, str(tmp_path / "nope"))
    with pytest.raises(PTQError, match=rf"{sources.CIFAR10_ENV} points at .*nope, which is not a folder"):
        sources.find_cifar10()


def test_download_is_verified_then_unpacked_whole(no_env: Path, tmp_path: Path, monkeypatch) -> None:
    url, md5 = _archive(tmp_path)
    monkeypatch.setattr(sources, "CIFAR10_URL", url)
    monkeypatch.setattr(sources, "CIFAR10_MD5", md5)
    folder = sources.find_cifar10()
    assert folder == no_env / sources.CIFAR10_FOLDER
    assert (folder / "batches.meta").read_bytes() == b"meta"
    assert [p.name for p in no_env.iterdir()] == [sources.CIFAR10_FOLDER]  # no staging left


def test_corrupt_download_is_never_unpacked(no_env: Path, tmp_path: Path, monkeypatch) -> None:
    url, _ = _archive(tmp_path)
    monkeypatch.setattr(sources, "CIFAR10_URL", url)
    monkeypatch.setattr(sources, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(PTQError, match=r"md5 .* expected 0{32}: the download is corrupt"):
        sources.find_cifar10()
    assert list(no_env.iterdir()) == []


def test_failed_download_names_the_url_and_the_way_out(no_env: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "RESNET8_URL", (tmp_path / "missing.h5").as_uri())
    with pytest.raises(PTQError, match=r"download of file:.*missing.h5 failed.*--resnet8-h5"):
        sources.find_resnet8_h5()
    assert list(no_env.iterdir()) == []


def test_weights_with_wrong_digest_are_refused(no_env: Path, tmp_path: Path) -> None:
    fake = tmp_path / "pretrainedResnet.h5"
    fake.write_bytes(b"not the model")
    with pytest.raises(PTQError, match=r"--resnet8-h5: .*pretrainedResnet.h5 has sha256 .*not the MLPerf Tiny"):
        sources.find_resnet8_h5(fake)


def test_read_only_cache_gets_a_clear_error(no_env: Path, tmp_path: Path, monkeypatch) -> None:
    import os

    if os.geteuid() == 0:
        monkeypatch.setenv(sources.CACHE_ENV, "/proc/ptq-cache")  # unwritable even for root
    else:
        no_env.mkdir()
        no_env.chmod(0o500)
    with pytest.raises(PTQError, match=r"cannot write to the cache .*set PTQ_CACHE_DIR"):
        sources.find_resnet8_h5()
