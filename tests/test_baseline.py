"""Each cell against its committed baseline (tests/baselines/<platform>/<cell>.yml).

Same platform (CPU capability and library versions): quantization and inference are deterministic,
so the predictions must be identical, image for image. Another platform's baseline: a drop of more
than ``--ptq-tolerance`` points fails, naming the images that flipped. A platform without a baseline
gets one written, and the test fails once to say so (pytest-regressions' rule); review and commit it.
Regenerate deliberately with ``pytest --force-regen`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ptq_core.matrix import Cell, pytest_params
from ptq_core.predictions import predictions_on_test
from ptq_core.report import accuracy_row, platform_id

BASELINES = Path(__file__).parent / "baselines"

pytestmark = pytest.mark.slow


def _flipped(old: np.ndarray, new: np.ndarray, labels: np.ndarray) -> str:
    lost = np.flatnonzero((old == labels) & (new != labels))
    gained = np.flatnonzero((old != labels) & (new == labels))
    return (
        f"{len(lost)} images now wrong (first: {lost[:10].tolist()}), "
        f"{len(gained)} now right (first: {gained[:10].tolist()})"
    )


def _compare_with_other_platforms(
    cell: Cell, correct: int, predictions: np.ndarray, labels: np.ndarray, tolerance: float, here: Path
) -> None:
    for other in sorted(BASELINES.glob(f"*/{cell.id}.yml")):
        if other.parent == here:
            continue
        old = yaml.safe_load(other.read_text())
        drop = (old["correct"] - correct) / 100
        if drop > tolerance:
            old_pred = np.load(other.with_suffix(".npy"))
            pytest.fail(
                f"{cell.id}: {correct / 100:.2f} % now vs {old['correct'] / 100:.2f} % on "
                f"{other.parent.name}: a drop of {drop:.2f} points (tolerance {tolerance}). "
                f"{_flipped(old_pred, predictions, labels)}"
            )


@pytest.mark.parametrize("cell", pytest_params())
def test_matches_baseline(
    cell: Cell, artifact: Path, ws, evaluated, fp32_onnx, test_split, data_regression, request
) -> None:
    here = BASELINES / platform_id()
    baseline = here / f"{cell.id}.yml"
    labels = test_split.labels
    predictions = predictions_on_test(ws, artifact)
    row = accuracy_row(predictions, labels, predictions_on_test(ws, fp32_onnx), np.ones(len(labels), bool))
    data = {
        "correct": row["correct"],
        "agreement_fp32": round(row["agreement_fp32"], 6),
        "predictions_sha256": row["predictions_sha256"],
    }
    tolerance = request.config.getoption("ptq_tolerance")
    _compare_with_other_platforms(cell, row["correct"], predictions, labels, tolerance, here)

    regen = request.config.getoption("force_regen") or request.config.getoption("regen_all")
    if baseline.exists() and not regen:
        old = yaml.safe_load(baseline.read_text())
        if old != data:
            pytest.fail(
                f"{cell.id} changed on the same platform ({here.name}): {old['correct']} -> "
                f"{data['correct']} correct; {_flipped(np.load(baseline.with_suffix('.npy')), predictions, labels)}. "
                "Same versions should give identical predictions: if the change is intended, "
                "run `pytest --force-regen`, review and commit the diff."
            )
    else:
        here.mkdir(parents=True, exist_ok=True)
        np.save(baseline.with_suffix(".npy"), predictions.astype(np.uint8))
    data_regression.check(data, fullpath=baseline)
