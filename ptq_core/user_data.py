"""A user's images and labels read and refused before anything is built (``read_data``, ``check_images``,
``check_labels``): what the scoring and calibration files hold, in the layout, dtype and range the model takes.
An .npz is read whole; a folder or an images .npy is read batch by batch (``ptq_core.shards``)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError
from ptq_core.shards import Shards, chunks, is_streamed, open_shards
from ptq_core.user_inputs import InputSpec

Images = np.ndarray | Shards


def read_data(path: Path, what: str, need_labels: bool) -> tuple[Images, np.ndarray | None]:
    """The images and labels of ``path``: an .npz (in memory), or a folder / images .npy (read batch by batch)."""
    if is_streamed(path):
        return open_shards(path, what, need_labels)
    return read_npz(path, what, need_labels)


def read_npz(path: Path, what: str, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``images`` and ``labels`` of an .npz file (no pickles), checked for being arrays of sane kinds."""
    save = "save them with np.savez(path, images=images, labels=labels)"
    if path.is_dir():
        raise PTQError(f"{what} {path} is a directory: pass an .npz file holding `images` and `labels` ({save})")
    if not path.is_file():
        raise PTQError(f"{what} {path}: no such file: pass an .npz holding `images` and `labels` (np.savez)")
    if path.suffix == ".npy" or _is_npy(path):
        raise PTQError(
            f"{what} {path} is a single .npy array: {what} takes an .npz with `images` and `labels` arrays ({save}), "
            "or images.npy with labels.npy beside it (read batch by batch)"
        )
    if not zipfile.is_zipfile(path):
        raise PTQError(f"{what} {path} is not a readable .npz of arrays (not a zip archive): {save}")
    arrays: dict[str, Any] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except Exception as exc:  # zip, zlib or numpy's format errors, an encrypted member, a header of absurd size
        reason = "it holds pickled objects" if "pickle" in str(exc) else f"{type(exc).__name__}: {str(exc)[:120]}"
        raise PTQError(f"{what} {path} is not a readable .npz of arrays ({reason}): {save}") from exc
    for key in ("images", "labels"):
        if key in arrays and not isinstance(arrays[key], np.ndarray):
            raise PTQError(
                f"{what} {path}: its `{key}` member is not a numpy array ({len(arrays[key])} bytes of something "
                f"else): {save}"
            )
    missing = [k for k in (("images", "labels") if need_labels else ("images",)) if k not in arrays]
    if missing:
        raise PTQError(
            f"{what} {path} has no {' or '.join(repr(m) for m in missing)} array (it holds {sorted(arrays)}): "
            "save it with np.savez(path, images=images, labels=labels)"
        )
    images, labels = arrays["images"], arrays.get("labels")
    if images.ndim == 0:
        raise PTQError(
            f"{what} {path}: `images` is a single value ({images.dtype}), not an array of images: save an array of "
            "shape (N, ...) as the model takes them"
        )
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise PTQError(
                f"{what} {path}: labels must be a 1-D array of integer class ids, got {labels.dtype} {labels.shape}"
            )
        if len(labels) != len(images):
            raise PTQError(f"{what} {path}: {len(images)} images but {len(labels)} labels: give one label per image")
    if len(images) == 0:
        raise PTQError(f"{what} {path} holds no images")
    return images, labels


def check_images(images: Images, spec: InputSpec, what: str) -> None:
    """Images exactly as the model's input takes them: rank, fixed sizes, dtype, and finite values."""
    if images.ndim != len(spec.dims) or any(
        d not in (None, -1) and d != n for d, n in zip(spec.dims[1:], images.shape[1:], strict=True)
    ):
        hint = ""
        if (
            images.ndim == 4
            and len(spec.dims) == 4
            and sorted(images.shape[1:]) == sorted(d for d in spec.dims[1:] if d)
        ):
            hint = ": the sizes match in another order, so transpose the images to the model's layout"
        raise PTQError(f"{what} images have shape {images.shape}, the model's {spec.describe()} does not take it{hint}")
    if images.dtype != spec.dtype:
        raise PTQError(
            f"{what} images are {images.dtype}, the model's {spec.describe()} takes {spec.dtype}: save them with "
            f"images.astype(np.{spec.dtype}) after the same preprocessing the model was trained with"
        )
    if images.dtype.kind == "f":
        values, start, rows = 0, 0, list[int]()
        for chunk in chunks(images):
            bad = ~np.isfinite(chunk)
            values += int(bad.sum())
            rows.extend(start + int(i) for i in np.flatnonzero(bad.reshape(len(chunk), -1).any(axis=1)))
            start += len(chunk)
        if values:
            raise PTQError(
                f"{what} images hold {values} NaN or infinite values, in {len(rows)} images (the first is "
                f"image {rows[0]}): remove or fix those images"
            )


def value_range(images: Images) -> tuple[float, float]:
    """The least and greatest value of every image, a chunk at a time."""
    lows, highs = zip(*((chunk.min(), chunk.max()) for chunk in chunks(images)), strict=True)
    return float(min(lows)), float(max(highs))


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.min() < 0 or labels.max() >= num_classes:
        raise PTQError(
            f"{what} labels run {labels.min()}..{labels.max()}, but the model answers {num_classes} classes "
            f"(0..{num_classes - 1}): map the labels to the model's class indices"
        )


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"
