"""Stratified, seeded calibration sets drawn from a labelled split, as a registered model takes its images."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from ptq_core.cifar10 import NUM_CLASSES
from ptq_core.errors import PTQError
from ptq_core.models import Model

SCORED_SPLITS = ("test", "data")  # CIFAR-10's test split; the images `ptq run` scores a user's model on


@dataclass(frozen=True)
class CalibrationConfig:
    num_samples: int = 200
    seed: int = 42
    split: str = "train"  # the 10,000 scored test images never calibrate a default artifact

    @property
    def is_default(self) -> bool:
        return self == CalibrationConfig()

    @property
    def suffix(self) -> str:
        """'' for the default set, else e.g. '_n50_s7_train', for artifact names."""
        return "" if self.is_default else f"_n{self.num_samples}_s{self.seed}_{self.split}"


def stratified_indices(
    labels: np.ndarray, num_samples: int, seed: int, classes: np.ndarray | None = None
) -> np.ndarray:
    """Sorted indices of ``num_samples`` distinct images, equally many from each class (default: CIFAR-10's 10).

    The remainder goes one extra image each to the classes of a seeded random choice, so any size from
    one per class up is stratified to within one image per class.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise PTQError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    classes = np.arange(NUM_CLASSES) if classes is None else np.asarray(classes)
    if len(labels) and not np.isin(labels, classes).all():
        raise PTQError(f"labels must lie in {classes.min()}..{classes.max()}, found {labels.min()}..{labels.max()}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < len(classes):
        raise PTQError(f"num_samples must be an integer >= {len(classes)} (one per class), got {num_samples!r}")
    rng = np.random.default_rng(seed)
    per_class = np.full(len(classes), num_samples // len(classes))
    per_class[rng.choice(len(classes), num_samples % len(classes), replace=False)] += 1
    counts = np.array([(labels == c).sum() for c in classes])
    short = np.flatnonzero(counts < per_class)
    if len(short):
        i = short[0]
        raise PTQError(
            f"num_samples={num_samples} needs {per_class[i]} images of class {classes[i]}, the split has "
            f"{counts[i]}: use at most {len(classes) * counts.min()} samples"
        )
    picked = [
        rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in zip(classes, per_class, strict=True)
    ]
    return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class CalibrationSet:
    images: np.ndarray  # in the model's input layout and dtype (CIFAR-10: float32 NHWC raw pixels)
    labels: np.ndarray | None  # None: the images came without labels (not stratified)
    indices: np.ndarray  # into the split the set was drawn from
    config: CalibrationConfig

    @functools.cached_property
    def sha256(self) -> str:
        """Digest of the images: it keys every artifact built from them."""
        return hashlib.sha256(self.images.tobytes()).hexdigest()

    def held_out(self, num_scored: int) -> np.ndarray:
        """Mask of the scored images this set did not use: all of them unless it was drawn from those."""
        mask = np.ones(num_scored, bool)
        if self.config.split in SCORED_SPLITS:
            mask[self.indices] = False
        return mask


def calibration_set(
    split_images: np.ndarray, split_labels: np.ndarray, config: CalibrationConfig, model: Model
) -> CalibrationSet:
    """The set of ``config`` drawn from a split's images and labels (N,), stratified over ``model``'s classes:
    its images as ``model`` takes them (its input shape, dtype and value range)."""
    shape = ", ".join(map(str, model.input_shape))
    if not isinstance(split_images, np.ndarray) or split_images.shape[1:] != model.input_shape:
        got = getattr(split_images, "shape", type(split_images).__name__)
        raise PTQError(f"calibration images must be an array of shape (N, {shape}) ({model.layout}), got {got}")
    if len(split_images) != len(np.asarray(split_labels)):
        raise PTQError(
            f"{len(split_images)} images but {len(np.asarray(split_labels))} labels: pass one label per image"
        )
    classes = np.arange(model.num_classes)
    idx = stratified_indices(np.asarray(split_labels), config.num_samples, config.seed, classes=classes)
    images = split_images[idx].astype(model.input_dtype)
    low, high = model.input_range
    bad = int((~np.isfinite(images) | (images < low) | (images > high)).sum())
    if bad:
        raise PTQError(
            f"calibration images must hold {model.name}'s input values, in [{low:g}, {high:g}] (no NaN/inf): "
            f"{bad} values are not"
        )
    return CalibrationSet(images, np.asarray(split_labels)[idx], idx, config)
