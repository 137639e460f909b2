"""CIFAR-10 from the official "python version" folder, verified by the decoded content's digests.

Batches are pickles; they are read with an unpickler that admits only what a data batch needs, so a
tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptq_core.errors import PTQError

NUM_CLASSES = 10
TEST_DATA_SHA256 = "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56"
TEST_LABELS_SHA256 = "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5"
SPLIT_FILES = {"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))}
IMAGES_PER_BATCH = 10_000

_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


@dataclass(frozen=True)
class Split:
    """Images as uint8 NHWC (N, 32, 32, 3); labels as int64 (N,)."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _fix_hint(folder: Path) -> str:
    return (
        f"Point --cifar10-dir / PTQ_CIFAR10_DIR at an intact cifar-10-batches-py folder (was {folder}), "
        "or delete it and run `python -m ptq_core prepare` to download the official archive."
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (uint8 (N, 3072) CHW-flattened data, int64 labels), checked for shape and range."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PTQError(f"cannot read CIFAR-10 batch {path}: {exc.strerror}. {_fix_hint(path.parent)}") from exc
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle raises nearly anything
        raise PTQError(
            f"{path} is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}). {_fix_hint(path.parent)}"
        ) from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise PTQError(f"{path} has no b'data'/b'labels' (found {keys}). {_fix_hint(path.parent)}")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise PTQError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {desc}. {_fix_hint(path.parent)}")
    try:
        labels = np.asarray(labels)
    except Exception as exc:
        raise PTQError(f"{path}: b'labels' is not a list of ints. {_fix_hint(path.parent)}") from exc
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise PTQError(
            f"{path}: b'labels' must be {len(data)} ints, got {labels.dtype} {labels.shape}. {_fix_hint(path.parent)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise PTQError(
            f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}. {_fix_hint(path.parent)}"
        )
    return data, labels.astype(np.int64)


def load_split(folder: str | Path, split: str = "test") -> Split:
    """Load ``split`` ('test' or 'train') from a cifar-10-batches-py folder; the test split is verified."""
    if split not in SPLIT_FILES:
        raise PTQError(f"unknown split {split!r}: choose one of {sorted(SPLIT_FILES)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise PTQError(f"CIFAR-10 folder {folder} does not exist. {_fix_hint(folder)}")
    parts = [read_batch(folder / name) for name in SPLIT_FILES[split]]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    expected = IMAGES_PER_BATCH * len(SPLIT_FILES[split])
    if len(labels) != expected:
        raise PTQError(
            f"{folder}: the {split} split has {len(labels)} images, expected {expected}. {_fix_hint(folder)}"
        )
    if split == "test":
        verify_test_split(data, labels, folder)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(split, np.ascontiguousarray(images), labels)


def verify_test_split(data: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    got = hashlib.sha256(np.ascontiguousarray(data, dtype=np.uint8).tobytes()).hexdigest()
    if got != TEST_DATA_SHA256:
        raise PTQError(
            f"{folder / 'test_batch'}: image data sha256 {got[:12]}… != official "
            f"{TEST_DATA_SHA256[:12]}…. {_fix_hint(folder)}"
        )
    got = hashlib.sha256(labels.astype(np.uint8).tobytes()).hexdigest()
    if got != TEST_LABELS_SHA256:
        raise PTQError(
            f"{folder / 'test_batch'}: labels sha256 {got[:12]}… != official "
            f"{TEST_LABELS_SHA256[:12]}…. {_fix_hint(folder)}"
        )
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if not (counts == 1000).all():
        raise PTQError(f"{folder / 'test_batch'}: class counts {counts.tolist()} != 1000 each. {_fix_hint(folder)}")
