"""The real CIFAR-10 test split, and the loader's refusals of anything else."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from ptq_core.cifar10 import TEST_DATA_SHA256, TEST_LABELS_SHA256, load_split, read_batch
from ptq_core.errors import PTQError


def test_test_split_matches_official_digests(test_split) -> None:
    data = test_split.images.transpose(0, 3, 1, 2).reshape(10_000, 3072)
    assert hashlib.sha256(data.tobytes()).hexdigest() == TEST_DATA_SHA256
    assert hashlib.sha256(test_split.labels.astype(np.uint8).tobytes()).hexdigest() == TEST_LABELS_SHA256


def test_test_split_has_1000_images_per_class(test_split) -> None:
    assert test_split.images.shape == (10_000, 32, 32, 3) and test_split.images.dtype == np.uint8
    assert np.bincount(test_split.labels, minlength=10).tolist() == [1000] * 10
    assert test_split.labels[0] == 3  # image 0 is a cat


def test_train_split_loads_50000_images(ws) -> None:
    train = ws.split("train")
    assert train.images.shape == (50_000, 32, 32, 3)
    assert np.bincount(train.labels, minlength=10).tolist() == [5000] * 10


@pytest.fixture
def cifar_copy(ws, tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(ws.cifar10_dir, folder, ignore=shutil.ignore_patterns("data_batch_*"))
    for p in folder.iterdir():
        os.chmod(p, 0o644)
    return folder


def _rewrite(folder: Path, **changes: object) -> None:
    path = folder / "test_batch"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch.update({k.encode(): v for k, v in changes.items()})
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(PTQError, match=r"nowhere.*does not exist.*PTQ_CIFAR10_DIR"):
        load_split(tmp_path / "nowhere")


def test_missing_batch_is_named(cifar_copy: Path) -> None:
    (cifar_copy / "test_batch").unlink()
    with pytest.raises(PTQError, match=r"test_batch.*No such file.*prepare"):
        load_split(cifar_copy)


def test_truncated_batch_is_named(cifar_copy: Path) -> None:
    path = cifar_copy / "test_batch"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(PTQError, match=r"test_batch is not a readable CIFAR-10 batch"):
        load_split(cifar_copy)


def test_wrong_shape_is_named(cifar_copy: Path) -> None:
    _rewrite(cifar_copy, data=np.zeros((10_000, 1024), np.uint8))
    with pytest.raises(PTQError, match=r"must be uint8 of shape \(N, 3072\), got uint8 \(10000, 1024\)"):
        load_split(cifar_copy)


def test_altered_pixels_fail_the_digest(cifar_copy: Path, test_split) -> None:
    data = test_split.images.transpose(0, 3, 1, 2).reshape(10_000, 3072).copy()
    data[0, 0] ^= 1
    _rewrite(cifar_copy, data=data)
    with pytest.raises(PTQError, match=r"image data sha256 .* != official"):
        load_split(cifar_copy)


def test_altered_labels_fail_the_digest(cifar_copy: Path, test_split) -> None:
    labels = test_split.labels.tolist()
    labels[0], labels[1] = labels[1], labels[0]
    _rewrite(cifar_copy, labels=labels)
    with pytest.raises(PTQError, match=r"labels sha256 .* != official"):
        load_split(cifar_copy)


def test_batch_without_filenames_key_loads(ws) -> None:
    data, labels = read_batch(ws.cifar10_dir / "test_batch")
    assert data.shape == (10_000, 3072) and labels.shape == (10_000,)


def test_unknown_split_lists_choices(ws) -> None:
    with pytest.raises(PTQError, match=r"unknown split 'val'.*test.*train"):
        load_split(ws.cifar10_dir, "val")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_calls_os_system_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    with pytest.raises(PTQError, match=r"global '(posix|os)\.system' is not allowed in a CIFAR-10 batch"):
        read_batch(path)
    assert not (tmp_path / "pwned").exists()


def test_batch_written_by_numpy_1_loads(tmp_path: Path) -> None:
    """The official files name numpy.core.multiarray (Python 2, numpy 1); this copy numpy._core."""
    batch = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), b"labels": [3, 9]}
    raw = pickle.dumps(batch, protocol=2)
    assert b"numpy._core.multiarray" in raw
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    data, labels = read_batch(path)
    assert np.array_equal(data, batch[b"data"]) and labels.tolist() == [3, 9]
