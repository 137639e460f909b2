"""Where the real CIFAR-10 folder and the MLPerf Tiny weights are found, or downloaded to.

Order: an explicit path (argument, CLI flag, pytest option); the environment variable; the cache
``$PTQ_CACHE_DIR`` (default ``~/.cache/ptq-suite``); else a download from the official source,
verified by checksum before it is unpacked or used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ptq_core.errors import PTQError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
RESNET8_URL = (
    "https://github.com/mlcommons/tiny/raw/bceb91c5ad2e2deb295547d81505721d3a87d578/"
    "benchmark/training/image_classification/trained_models/pretrainedResnet.h5"
)
RESNET8_SHA256 = "5f938a8eea605438cc7360aa13c987bc6d7bd0c8d931b2917361ae7ae4eeda2f"
RESNET8_FILE = "pretrainedResnet.h5"
CIFAR10_ENV, RESNET8_ENV, CACHE_ENV = "PTQ_CIFAR10_DIR", "PTQ_RESNET8_H5", "PTQ_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ptq-suite").expanduser()


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_cifar10(explicit: str | Path | None = None, download: bool = True) -> Path:
    """The cifar-10-batches-py folder (its content is verified when it is loaded)."""
    for given, origin in ((explicit, "--cifar10-dir"), (os.environ.get(CIFAR10_ENV), CIFAR10_ENV)):
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise PTQError(
                    f"{origin} points at {path}, which is not a folder: give the "
                    f"{CIFAR10_FOLDER} folder, or unset it to use the cache/download"
                )
            return path
    cached = cache_dir() / CIFAR10_FOLDER
    if cached.is_dir():
        return cached
    if not download:
        raise PTQError(
            f"CIFAR-10 not found: pass --cifar10-dir, set {CIFAR10_ENV}, or run `python -m ptq_core prepare`"
        )
    _download_cifar10(cached)
    return cached


def find_resnet8_h5(explicit: str | Path | None = None, download: bool = True) -> Path:
    """pretrainedResnet.h5, checked against its sha256."""
    for given, origin in ((explicit, "--resnet8-h5"), (os.environ.get(RESNET8_ENV), RESNET8_ENV)):
        if given:
            return _verified_weights(Path(given).expanduser(), origin)
    cached = cache_dir() / RESNET8_FILE
    if cached.is_file():
        return _verified_weights(cached, "the cache")
    if not download:
        raise PTQError(
            f"ResNet8 weights not found: pass --resnet8-h5, set {RESNET8_ENV}, or run `python -m ptq_core prepare`"
        )
    with _staging(cached.parent) as tmp:
        part = tmp / RESNET8_FILE
        _fetch(RESNET8_URL, part)
        _check_digest(part, "sha256", RESNET8_SHA256, RESNET8_URL)
        os.replace(part, cached)
    return cached


def _verified_weights(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise PTQError(
            f"{origin}: ResNet8 weights {path} do not exist: give the path of {RESNET8_FILE}, "
            f"or unset it to use the cache/download"
        )
    digest = file_digest(path)
    if digest != RESNET8_SHA256:
        raise PTQError(
            f"{origin}: {path} has sha256 {digest[:12]}…, not the MLPerf Tiny ResNet8 "
            f"({RESNET8_SHA256[:12]}…): replace it with {RESNET8_FILE} from {RESNET8_URL}"
        )
    return path


def _download_cifar10(dest: Path) -> None:
    with _staging(dest.parent) as tmp:
        archive = tmp / "cifar-10-python.tar.gz"
        _fetch(CIFAR10_URL, archive)
        _check_digest(archive, "md5", CIFAR10_MD5, CIFAR10_URL)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / CIFAR10_FOLDER).is_dir():
            raise PTQError(f"{CIFAR10_URL} did not unpack to {CIFAR10_FOLDER}/")
        os.replace(tmp / CIFAR10_FOLDER, dest)  # the folder appears whole or not at all


class _staging:
    """A temporary folder next to ``parent`` (same filesystem, so os.replace is atomic), always removed."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    def __enter__(self) -> Path:
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=".download-", dir=self.parent))
        except OSError as exc:
            raise PTQError(
                f"cannot write to the cache {self.parent} ({exc.strerror}): set {CACHE_ENV} to a writable folder"
            ) from exc
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _fetch(url: str, dest: Path) -> None:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        raise PTQError(
            f"download of {url} failed ({exc}): fetch it by hand and pass its path (--cifar10-dir / --resnet8-h5)"
        ) from exc


def _check_digest(path: Path, algorithm: str, expected: str, url: str) -> None:
    got = file_digest(path, algorithm)
    if got != expected:
        raise PTQError(
            f"{url} downloaded with {algorithm} {got}, expected {expected}: "
            "the download is corrupt or was altered; nothing was unpacked, try again"
        )
