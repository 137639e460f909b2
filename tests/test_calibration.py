"""Calibration sets: stratified, distinct, seeded; properties over arbitrary label arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ptq_core.calibration import CalibrationConfig, calibration_set, stratified_indices
from ptq_core.errors import PTQError
from ptq_core.models import get_model

# label arrays in which every class has at least `floor` images
labels_st = st.integers(1, 40).flatmap(
    lambda floor: arrays(np.int64, st.integers(0, 200), elements=st.integers(0, 9)).map(
        lambda extra: np.random.default_rng(len(extra)).permutation(
            np.concatenate([np.repeat(np.arange(10), floor), extra])
        )
    )
)


@settings(max_examples=200, deadline=None)
@given(labels=labels_st, data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_indices_are_stratified_distinct_and_seeded(labels: np.ndarray, data, seed: int) -> None:
    floor = np.bincount(labels, minlength=10).min()
    n = data.draw(st.integers(10, 10 * int(floor)), label="num_samples")
    idx = stratified_indices(labels, n, seed)
    counts = np.bincount(labels[idx], minlength=10)
    assert len(idx) == n and len(np.unique(idx)) == n
    assert counts.min() == n // 10 and counts.max() - counts.min() <= 1
    assert counts.sum() - 10 * (n // 10) == n % 10  # the remainder: one extra image for n % 10 classes
    assert np.array_equal(idx, stratified_indices(labels, n, seed))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_different_seeds_draw_different_sets(seed: int) -> None:
    labels = np.repeat(np.arange(10), 1000)
    assert not np.array_equal(stratified_indices(labels, 200, seed), stratified_indices(labels, 200, seed + 1))


@pytest.mark.parametrize("n", [0, -5, 9, 2.5, True])
def test_impossible_sample_count_is_refused(n: object) -> None:
    with pytest.raises(PTQError, match="num_samples must be an integer >= 10"):
        stratified_indices(np.repeat(np.arange(10), 5), n, 0)  # type: ignore[arg-type]


def test_more_samples_than_a_class_has_is_refused() -> None:
    with pytest.raises(PTQError, match=r"needs 6 images of class \d, the split has 5: use at most 50"):
        stratified_indices(np.repeat(np.arange(10), 5), 60, 0)


def test_default_set_is_200_stratified_train_images(ws) -> None:
    calib = ws.calibration()
    assert calib.images.shape == (200, 32, 32, 3) and calib.images.dtype == np.float32
    assert 0 <= calib.images.min() and calib.images.max() <= 255 and calib.images.max() > 1  # raw, not normalised
    assert np.bincount(calib.labels, minlength=10).tolist() == [20] * 10
    train = ws.split("train")
    assert np.array_equal(calib.images, train.images[calib.indices].astype(np.float32))
    assert np.array_equal(calib.labels, train.labels[calib.indices])


def test_default_calibration_shares_no_image_with_the_scored_test_split(ws) -> None:
    """The 10,000 test images score every cell, so none of them may calibrate one (checked pixel for pixel)."""
    calib = ws.calibration()
    test = {row.tobytes() for row in ws.split("test").images.reshape(10_000, -1)}
    leaked = [
        i
        for i, image in zip(calib.indices, calib.images.astype(np.uint8).reshape(len(calib.images), -1), strict=True)
        if image.tobytes() in test
    ]
    assert not leaked, f"calibration images {leaked[:10]} are test images"
    assert calib.held_out(10_000).all()


def test_test_split_protocol_holds_out_its_own_images(ws) -> None:
    calib = ws.calibration(CalibrationConfig(50, seed=1, split="test"))
    test = ws.split("test")
    assert np.array_equal(calib.images, test.images[calib.indices].astype(np.float32))
    assert np.bincount(calib.labels, minlength=10).tolist() == [5] * 10
    held_out = calib.held_out(len(test))
    assert held_out.sum() == 10_000 - 50 and not held_out[calib.indices].any()


def test_a_calibration_set_is_drawn_as_its_model_takes_images() -> None:
    """The input shape, value range and classes are the model's declaration, not CIFAR-10's."""
    tiny = dataclasses.replace(
        get_model("resnet8"), name="tiny", input_shape=(3, 8, 8), layout="NCHW", input_range=(-1.0, 1.0), num_classes=4
    )
    images, labels = np.linspace(-1, 1, 40 * 192, dtype=np.float32).reshape(40, 3, 8, 8), np.arange(40) % 4
    calib = calibration_set(images, labels, CalibrationConfig(num_samples=8), tiny)
    assert np.bincount(calib.labels).tolist() == [2] * 4
    with pytest.raises(PTQError, match=r"shape \(N, 3, 8, 8\) \(NCHW\)"):
        calibration_set(images.transpose(0, 2, 3, 1), labels, CalibrationConfig(num_samples=8), tiny)
    with pytest.raises(PTQError, match=r"tiny's input values, in \[-1, 1\]"):
        calibration_set(images * 2, labels, CalibrationConfig(num_samples=8), tiny)
    with pytest.raises(PTQError, match="labels must lie in 0..3"):
        calibration_set(images, np.arange(40) % 5, CalibrationConfig(num_samples=8), tiny)
