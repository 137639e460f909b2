"""Images on disk, read batch by batch: ``images.npy`` + ``labels.npy`` (memory-mapped) or a folder of shards, so
a validation set larger than memory is checked, digested and scored in the memory of one batch.

A folder holds ``images.npy`` + ``labels.npy``, or shards in name order: ``.npz`` files (``images``, ``labels``)
and pairs ``images<S>.npy`` + ``labels<S>.npy`` (``images-000.npy`` with ``labels-000.npy``, ...). Every
header is read and checked (shapes, dtypes, lengths, file sizes) before any image is.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError

CHUNK_BYTES = 32 << 20  # what one pass over every image (finiteness, range, digest) holds at once
LAYOUT = (
    "a folder holding images.npy and labels.npy (np.save), or shards: .npz files each with `images` and `labels`, "
    "or pairs images-000.npy + labels-000.npy, ..."
)


@dataclass(frozen=True)
class Header:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool


@dataclass(frozen=True)
class Part:
    """One file's images: rows ``start`` .. ``start + rows - 1`` of the whole."""

    path: Path  # an images .npy, or an .npz holding `images`
    start: int
    rows: int


class Shards:
    """The images of one or more files, read like an array: ``len``, ``shape``, ``dtype``, ``ndim``; a slice or an
    integer index array gives an ndarray, read then (an .npy's pages are released once copied; the last .npz read
    is kept, so a pass in order decompresses each once)."""

    def __init__(self, parts: tuple[Part, ...], shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.parts, self.shape, self.dtype = parts, shape, dtype
        self._starts = np.array([p.start for p in parts])
        self._npz: tuple[Path, np.ndarray] | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Shards({len(self.parts)} files, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step == 1:
                return self._rows(lo, max(lo, hi))
            key = np.arange(lo, hi, step)
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        index = np.asarray(key)
        if index.dtype.kind not in "iu" or index.ndim != 1:
            raise TypeError(f"Shards take a slice or a 1-D integer index array, got {index.dtype} {index.shape}")
        index = np.where(index < 0, index + len(self), index)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        which = np.searchsorted(self._starts, index, side="right") - 1
        for p in np.unique(which):
            part, mine = self.parts[p], np.flatnonzero(which == p)
            out[mine] = self._take(part, index[mine] - part.start)
        return out

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        pieces = []
        for part in self.parts:
            a, b = max(lo, part.start), min(hi, part.start + part.rows)
            if a < b:
                pieces.append(self._take(part, slice(a - part.start, b - part.start)))
        if not pieces:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _take(self, part: Part, rows: slice | np.ndarray) -> np.ndarray:
        """A copy of ``rows`` of one file: the caller may write to it, and an .npy's mapping (with its resident
        pages) goes when ``mapped`` does."""
        if part.path.suffix == ".npz":
            return np.array(self._npz_images(part.path)[rows])
        mapped = np.load(part.path, mmap_mode="r")
        return np.array(mapped[rows])

    def _npz_images(self, path: Path) -> np.ndarray:
        if self._npz is None or self._npz[0] != path:
            self._npz = None  # the previous shard goes before the next is read
            with np.load(path, allow_pickle=False) as npz:
                self._npz = (path, npz["images"])
        return self._npz[1]


def chunks(images: Any) -> Iterator[np.ndarray]:
    """``images`` (an ndarray or :class:`Shards`) in consecutive chunks of about ``CHUNK_BYTES``."""
    row = int(np.prod(images.shape[1:], dtype=np.int64)) * images.dtype.itemsize
    step = max(1, CHUNK_BYTES // max(row, 1))
    for start in range(0, len(images), step):
        yield images[start : start + step]


def is_streamed(path: Path) -> bool:
    """``--data`` names images read batch by batch: a folder, or an images .npy."""
    return path.is_dir() or (path.suffix == ".npy" and path.name.startswith("images"))


def open_shards(path: Path, what: str, need_labels: bool) -> tuple[Shards, np.ndarray | None]:
    """The images of ``path`` (a folder, or an ``images*.npy`` with its ``labels*.npy`` beside it) and all their
    labels (None when there are none and ``need_labels`` is false), every header checked first."""
    files = _files(path, what)
    parts, labels, first = [], [], None
    start = 0
    for images_file, labels_file in files:
        header = _header(images_file, "images", what)
        if len(header.shape) < 2 or header.shape[0] == 0:
            raise PTQError(f"{what} {images_file}: `images` has shape {header.shape}: save (N, ...) images, N >= 1")
        if first is None:
            first = (images_file, header)
        elif header.shape[1:] != first[1].shape[1:] or header.dtype != first[1].dtype:
            raise PTQError(
                f"{what}: shard {images_file.name} holds {header.dtype} images of shape {header.shape[1:]}, but "
                f"{first[0].name} holds {first[1].dtype} of shape {first[1].shape[1:]}: every shard must hold images "
                "of one shape and dtype"
            )
        label = _labels(labels_file, header.shape[0], what, need_labels)
        labels.append(label)
        parts.append(Part(images_file, start, header.shape[0]))
        start += header.shape[0]
    assert first is not None
    have = [lab is not None for lab in labels]
    if any(have) and not all(have):
        missing = next(p.path.name for p, h in zip(parts, have, strict=True) if not h)
        raise PTQError(f"{what}: shard {missing} has no labels while others have: give every shard its labels")
    images = Shards(tuple(parts), (start, *first[1].shape[1:]), first[1].dtype)
    return images, (np.concatenate(labels) if all(have) else None)  # type: ignore[arg-type]


def _files(path: Path, what: str) -> list[tuple[Path, Path | None]]:
    """(images file, labels file or None) per shard, in name order."""
    if path.is_file():
        return [(path, _pair(path))]
    if not path.is_dir():
        raise PTQError(f"{what} {path}: no such file or folder: pass an .npz, or {LAYOUT}")
    shards: list[tuple[Path, Path | None]] = []
    for f in sorted(path.iterdir()):
        if f.suffix == ".npz":
            shards.append((f, f))
        elif f.suffix == ".npy" and f.name.startswith("images"):
            shards.append((f, _pair(f)))
        elif f.suffix == ".npy" and not f.name.startswith("labels"):
            raise PTQError(f"{what} {path}: {f.name} is neither images*.npy nor labels*.npy: {LAYOUT}")
    labels = {f.name for f in path.glob("labels*.npy")} - {str(lab.name) for _, lab in shards if lab}
    if labels:
        raise PTQError(f"{what} {path}: {sorted(labels)[0]} has no images file of the same suffix: {LAYOUT}")
    if not shards:
        raise PTQError(f"{what} {path} holds no images: it must be {LAYOUT}")
    return shards


def _pair(images: Path) -> Path | None:
    labels = images.with_name("labels" + images.name.removeprefix("images"))
    return labels if labels.exists() else None


def _header(path: Path, key: str, what: str) -> Header:
    """The array header of an .npy, or of member ``key`` of an .npz, checked against the bytes on disk."""
    fix = "save it again with np.save / np.savez"
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                if f"{key}.npy" not in z.namelist():
                    raise PTQError(f"{what}: shard {path.name} has no `{key}` array (it holds {z.namelist()}): {fix}")
                info = z.getinfo(f"{key}.npy")
                with z.open(info) as f:
                    header, offset = _read_header(f)
                size = info.file_size
        else:
            with open(path, "rb") as f:
                header, offset = _read_header(f)
            size = path.stat().st_size
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PTQError(f"{what}: {path.name} is not a readable numpy array ({exc}): {fix}") from exc
    if header.dtype.hasobject:
        raise PTQError(f"{what}: {path.name} holds Python objects ({header.dtype}): save numeric arrays")
    expected = offset + int(np.prod(header.shape, dtype=np.int64)) * header.dtype.itemsize
    if size != expected:
        raise PTQError(
            f"{what}: {path.name} is {size:,} bytes but its header promises {header.dtype} {header.shape}, "
            f"{expected:,} bytes: the file is {'truncated' if size < expected else 'longer than its array'} on disk; "
            f"{fix}"
        )
    return header


def _read_header(f: Any) -> tuple[Header, int]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(f)
    return Header(tuple(shape), dtype, fortran_order), f.tell()


def _labels(path: Path | None, rows: int, what: str, need: bool) -> np.ndarray | None:
    if path is not None and path.suffix == ".npz" and not need:
        with zipfile.ZipFile(path) as z:
            path = path if "labels.npy" in z.namelist() else None
    if path is None:
        if need:
            raise PTQError(f"{what}: no labels beside the images: {LAYOUT}")
        return None
    header = _header(path, "labels", what)
    if len(header.shape) != 1 or header.dtype.kind not in "iu":
        raise PTQError(
            f"{what}: {path.name}: labels must be a 1-D array of integer class ids, got {header.dtype} {header.shape}"
        )
    if header.shape[0] != rows:
        raise PTQError(
            f"{what}: {path.name} holds {header.shape[0]} labels for {rows} images: give one label per image"
        )
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz["labels"])
    return np.load(path, allow_pickle=False)
