"""Stratified, seeded calibration sets drawn from a CIFAR-10 split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptq_core.cifar10 import NUM_CLASSES
from ptq_core.errors import PTQError


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


def stratified_indices(labels: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of ``num_samples`` distinct images, ``num_samples // 10`` from every class.

    The remainder ``num_samples % 10`` goes one extra image each to the classes of a seeded random
    choice, so any size from 10 up is stratified to within one image per class.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise PTQError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise PTQError(f"labels must lie in 0..{NUM_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < NUM_CLASSES:
        raise PTQError(f"num_samples must be an integer >= {NUM_CLASSES} (one per class), got {num_samples!r}")
    rng = np.random.default_rng(seed)
    per_class = np.full(NUM_CLASSES, num_samples // NUM_CLASSES)
    per_class[rng.choice(NUM_CLASSES, num_samples % NUM_CLASSES, replace=False)] += 1
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    short = [c for c in range(NUM_CLASSES) if counts[c] < per_class[c]]
    if short:
        c = short[0]
        raise PTQError(
            f"num_samples={num_samples} needs {per_class[c]} images of class {c}, the split has "
            f"{counts[c]}: use at most {NUM_CLASSES * counts.min()} samples"
        )
    picked = [rng.choice(np.flatnonzero(labels == c), per_class[c], replace=False) for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class CalibrationSet:
    images: np.ndarray  # float32 (N, 32, 32, 3) raw pixels in [0, 255]
    labels: np.ndarray
    indices: np.ndarray  # into the split the set was drawn from
    config: CalibrationConfig

    def held_out(self, num_test: int) -> np.ndarray:
        """Mask of the test images this set did not use: all of them unless it was drawn from the test split."""
        mask = np.ones(num_test, bool)
        if self.config.split == "test":
            mask[self.indices] = False
        return mask


def calibration_set(split_images: np.ndarray, split_labels: np.ndarray, config: CalibrationConfig) -> CalibrationSet:
    """The stratified set of ``config`` drawn from a split's images (N, 32, 32, 3) and labels (N,)."""
    if not isinstance(split_images, np.ndarray) or split_images.ndim != 4 or split_images.shape[1:] != (32, 32, 3):
        shape = getattr(split_images, "shape", type(split_images).__name__)
        raise PTQError(f"calibration images must be an array of shape (N, 32, 32, 3) (NHWC), got {shape}")
    if len(split_images) != len(np.asarray(split_labels)):
        raise PTQError(
            f"{len(split_images)} images but {len(np.asarray(split_labels))} labels: pass one label per image"
        )
    idx = stratified_indices(np.asarray(split_labels), config.num_samples, config.seed)
    images = split_images[idx].astype(np.float32)
    bad = int((~np.isfinite(images) | (images < 0) | (images > 255)).sum())
    if bad:
        raise PTQError(
            f"calibration images must be raw pixels in [0, 255] (no NaN/inf, not normalised): {bad} values are not"
        )
    return CalibrationSet(images, np.asarray(split_labels)[idx], idx, config)
