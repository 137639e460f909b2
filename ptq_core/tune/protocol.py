"""The three image sets of a tune, kept apart: the calibration sets (the store's labelled split), a stratified
validation set of the other images of that split, which decides everything, and the scored split, read once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptq_core.calibration import CalibrationConfig, stratified_indices
from ptq_core.errors import PTQError
from ptq_core.workspace import ArtifactStore

VALIDATION_SIZE, VALIDATION_SEED = 5000, 1
CALIBRATION_SAMPLES = (200, 1000)  # a registered model's calibration sets (--calibration-samples)
SPEED_BATCH = 256  # the batch candidates are timed (and served by a runtime that only deploys) at, 1 thread


def digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def validation_indices(
    labels: np.ndarray, calibration: np.ndarray, size: int | None, seed: int, classes: np.ndarray | None = None
) -> np.ndarray:
    """``size`` (default: up to ``VALIDATION_SIZE``) stratified images of the pool that are not calibration
    images: sorted indices into the pool (the train split, or a user's calibration file)."""
    others = np.setdiff1d(np.arange(len(labels)), calibration)
    n_classes = 10 if classes is None else len(classes)
    if size is None:  # as many as stay stratified: every class as often as the rarest
        counts = [int((labels[others] == c).sum()) for c in (np.arange(10) if classes is None else classes)]
        size = min(VALIDATION_SIZE, n_classes * min(counts))
    if not n_classes <= size <= len(others):
        raise PTQError(
            f"--validation {size}: give between {n_classes} (one per class) and {len(others)} (the images that do "
            "not calibrate) validation images"
        )
    return np.sort(others[stratified_indices(labels[others], size, seed, classes)])


def calibration_configs(ws: ArtifactStore, sizes: tuple[int, ...] | None) -> tuple[CalibrationConfig, ...]:
    """The calibration sets of ``sizes`` images (None: ``CALIBRATION_SAMPLES``), smallest first; a store with
    one set (a user's) has only that one, and refuses other sizes."""
    fixed = ws.fixed_calibration()
    if fixed is not None:
        if sizes is not None:
            raise PTQError(
                f"--calibration-samples {' '.join(map(str, sizes))}: ptq tune --onnx calibrates every cell on one "
                f"set, {fixed.num_samples} stratified images of --calibration (the others validate); the option "
                "sizes a registered model's sets of CIFAR-10 train images: drop it"
            )
        return (fixed,)
    for n in sizes or CALIBRATION_SAMPLES:
        if not 10 <= n <= 10_000:  # CIFAR-10's train split
            raise PTQError(f"--calibration-samples {n}: give between 10 (one image per class) and 10000 train images")
    return tuple(CalibrationConfig(num_samples=n) for n in sorted(set(sizes or CALIBRATION_SAMPLES)))


@dataclass(frozen=True)
class Protocol:
    """Where a tune's images come from and which of them validate."""

    split: str  # the labelled split that calibrates and validates: "train", or a user's "calibration"
    configs: tuple[CalibrationConfig, ...]  # the calibration sets; the first is the base (see ``base``)
    validation: np.ndarray  # indices into ``split``
    labels: np.ndarray  # of the validation images
    images: np.ndarray  # the validation images

    @classmethod
    def of(cls, ws: ArtifactStore, model: str, sizes: tuple[int, ...] | None, validation_size: int | None) -> Protocol:
        split = ws.tuning_split()
        if split is None:
            raise PTQError(
                "ptq tune --onnx needs --calibration CALIB.npz with `images` and `labels`: 200 of them calibrate, "
                "others validate, and --data is scored once at the end"
            )
        configs = calibration_configs(ws, sizes)
        source = ws.split(split)
        calibrated = np.unique(np.concatenate([ws.calibration(c, model).indices for c in configs]))
        val = validation_indices(source.labels, calibrated, validation_size, VALIDATION_SEED, np.unique(source.labels))
        return cls(split, configs, val, source.labels[val], source.images[val])

    @property
    def base(self) -> CalibrationConfig:
        """The set that entropy and distribution cells (whose ranges cost far more on more images, or are
        known-bad), the calibrator variants, mixed precision and NNCF's accuracy control calibrate on."""
        return self.configs[0]

    def trace(self, ws: ArtifactStore, model: str) -> dict[str, Any]:
        """tune.json's ``protocol``: each set's split, size and indices' digest, and the scored split (CIFAR-10's
        test split, or a user's --data), of which nothing is read before the choice."""
        scored = ws.split("test")
        return {
            "calibration": [
                {
                    "split": self.split,
                    "images": c.num_samples,
                    "indices_sha256": digest(ws.calibration(c, model).indices),
                }
                for c in self.configs
            ],
            "validation": {
                "split": self.split,
                "images": len(self.validation),
                "seed": VALIDATION_SEED,
                "indices_sha256": digest(self.validation),
            },
            "test": {"split": scored.name, "images": len(scored), "scored": "once: the chosen model, FP32"},
        }
