"""The statistics the report's verdicts rest on, against values computed independently."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptq_core.stats import accuracy_row, mcnemar_exact, wilson_interval


@pytest.mark.parametrize(
    "correct, total, low, high",
    [
        (8719, 10_000, 0.86521, 0.87831),  # FP32 ResNet8
        (0, 10, 0.0, 0.27753),
        (10, 10, 0.72247, 1.0),
        (5, 10, 0.23659, 0.76341),
    ],
)
def test_wilson_interval_matches_reference_values(correct, total, low, high) -> None:
    assert wilson_interval(correct, total) == pytest.approx((low, high), abs=1e-5)


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_point_estimate(pair) -> None:
    correct, total = pair
    low, high = wilson_interval(correct, total)
    assert 0 <= low <= correct / total <= high <= 1


@pytest.mark.parametrize(
    "b, c, p",
    [
        (0, 0, 1.0),
        (10, 0, 2 / 2**10),
        (5, 5, 1.0),
        (12, 3, 0.03515625),  # 2 * P(X <= 3), X ~ Bin(15, 1/2) = 2 * 576 / 32768
    ],
)
def test_mcnemar_exact_p_values(b, c, p) -> None:
    ref = np.array([True] * b + [False] * c + [True] * 7)
    cand = np.array([False] * b + [True] * c + [True] * 7)
    assert mcnemar_exact(ref, cand) == (b, c, pytest.approx(p))


def test_mcnemar_handles_thousands_of_discordant_pairs() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(10_000) < 0.87
    _, _, p_same = mcnemar_exact(ref, ref)
    _, _, p_worse = mcnemar_exact(ref, ref & (rng.random(10_000) < 0.95))
    assert p_same == 1.0 and p_worse < 1e-50


def test_the_predictions_digest_tells_class_256_from_class_0() -> None:
    labels, held_out = np.array([0, 0]), np.ones(2, bool)
    wraps, zero = (
        accuracy_row(np.array([0, 256]), labels, labels, held_out),
        accuracy_row(labels, labels, labels, held_out),
    )
    assert wraps["predictions_sha256"] != zero["predictions_sha256"]  # as uint8, 256 would be 0: one digest


def test_a_ten_class_digest_is_the_one_the_committed_baselines_hold() -> None:
    import hashlib

    predictions = np.arange(10)
    row = accuracy_row(predictions, predictions, predictions, np.ones(10, bool))
    assert row["predictions_sha256"] == hashlib.sha256(predictions.astype(np.uint8).tobytes()).hexdigest()
