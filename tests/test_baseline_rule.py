"""The baseline rule on synthetic predictions: what passes, what fails, what is written for review."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptq_core import baselines
from ptq_core.baselines import BaselineChanged

LABELS = np.arange(1000) % 10
SUBJECT = "resnet8-x-on-y"


def _data(predictions: np.ndarray) -> dict:
    import hashlib

    correct = int((predictions == LABELS).sum())
    return baselines.record(correct, 1.0, hashlib.sha256(predictions.astype(np.uint8).tobytes()).hexdigest())


def _flip(predictions: np.ndarray, wrong: int = 0, right: int = 0) -> np.ndarray:
    """``wrong`` right answers made wrong (from the start) and ``right`` wrong ones made right (from the end)."""
    out = predictions.copy()
    hits = np.flatnonzero(out == LABELS)
    misses = np.flatnonzero(out != LABELS)
    out[hits[:wrong]] = (LABELS[hits[:wrong]] + 1) % 10
    out[misses[len(misses) - right :]] = LABELS[misses[len(misses) - right :]]
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = LABELS.copy()
    base[:100] = (base[:100] + 1) % 10  # 900 of 1000 right
    baselines.write(tmp_path / "old-stack", SUBJECT, _data(base), base)
    return tmp_path


def _judge(root: Path, predictions: np.ndarray, here: str = "new-stack", tolerance: float = 0.25):
    return baselines.judge(root, root / here, SUBJECT, _data(predictions), predictions, LABELS, tolerance)


def _old(root: Path) -> np.ndarray:
    return np.load(root / "old-stack" / f"{SUBJECT}.npy")


def test_identical_predictions_under_a_new_stack_pass_and_are_written(root: Path) -> None:
    verdict = _judge(root, _old(root))
    assert verdict.passed and verdict.write and not verdict.message


def test_a_drop_beyond_tolerance_fails_naming_the_flipped_images(root: Path) -> None:
    verdict = _judge(root, _flip(_old(root), wrong=3))  # 0.3 points of 1000 images
    assert not verdict.passed and not verdict.write
    assert (
        "a drop of 0.30 points" in verdict.message and "3 images now wrong (first: [100, 101, 102])" in verdict.message
    )


def test_a_drop_within_tolerance_passes_with_a_warning(root: Path) -> None:
    with pytest.warns(BaselineChanged, match=r"900 -> 898 against old-stack \(2 images now wrong"):
        verdict = _judge(root, _flip(_old(root), wrong=2))
    assert verdict.passed and verdict.write


def test_a_gain_is_reported_not_failed(root: Path) -> None:
    with pytest.warns(BaselineChanged, match=r"900 -> 950 .* 50 now right"):
        verdict = _judge(root, _flip(_old(root), right=50))
    assert verdict.passed and verdict.write


def test_swapped_flips_with_the_same_count_still_warn(root: Path) -> None:
    with pytest.warns(BaselineChanged, match=r"900 -> 900 .*1 images now wrong.*1 now right"):
        assert _judge(root, _flip(_old(root), wrong=1, right=1)).passed


def test_any_change_under_its_own_stack_fails(root: Path) -> None:
    verdict = _judge(root, _flip(_old(root), right=1), here="old-stack")
    assert not verdict.passed and not verdict.write and "changed under the same library versions" in verdict.message
    assert _judge(root, _old(root), here="old-stack") == baselines.Verdict(True, False)


def test_a_subject_without_any_baseline_is_written_and_fails_once(tmp_path: Path) -> None:
    predictions = LABELS.copy()
    verdict = baselines.judge(tmp_path, tmp_path / "stack", SUBJECT, _data(predictions), predictions, LABELS, 0.25)
    assert not verdict.passed and verdict.write and "no baseline yet" in verdict.message


def test_diff_counts_correct_answers_and_flips(root: Path) -> None:
    new = _flip(_old(root), wrong=2, right=5)
    baselines.write(root / "new-stack", SUBJECT, _data(new), new)
    (row,) = baselines.diff(root / "old-stack", root / "new-stack", LABELS)
    assert row == {
        "subject": SUBJECT,
        "old_correct": 900,
        "new_correct": 903,
        "changed_predictions": 7,
        "lost": 2,
        "gained": 5,
    }


def test_an_upgrade_is_judged_against_its_own_cpus_baselines_not_another_cpus(root: Path) -> None:
    # "old-stack" stands for another CPU kind; this CPU's baseline under older libraries is 50 images below it
    ours = _flip(_old(root), wrong=50)
    baselines.write(root / "x86_64-avx2-lib1.0", SUBJECT, _data(ours), ours)
    verdict = _judge(root, ours, here="x86_64-avx2-lib2.0")
    assert verdict.passed and not verdict.message  # identical to its own CPU's, never compared with "old-stack"
    with pytest.warns(BaselineChanged, match="against x86_64-avx2-lib1.0"):
        assert _judge(root, _flip(ours, wrong=2), here="x86_64-avx2-lib2.0").passed


def test_a_cpu_without_baselines_is_judged_against_another_cpus_and_told_how_to_write_its_own(root: Path) -> None:
    verdict = _judge(root, _flip(_old(root), wrong=50), here="x86_64-avx2-lib2.0")
    assert not verdict.passed and "a drop of 5.00 points" in verdict.message
    assert "No baseline of this CPU kind (x86_64-avx2) yet" in verdict.message and "--force-regen" in verdict.message
