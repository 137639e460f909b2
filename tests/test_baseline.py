"""Each cell on each runtime against its committed baseline (tests/baselines/<baseline id>/<subject>.yml).

A baseline id is the CPU capability plus the versions of the libraries the cell and its runtime depend on
(``ptq_core.platform.baseline_id``), so upgrading one library touches only the cells that use it. Same
id: quantization and inference are deterministic, so the predictions must be identical, image for image.
Another id's baseline: a drop of more than ``--ptq-tolerance`` points fails, naming the images that
flipped. An id without a baseline gets one written, and the test fails once to say so (pytest-regressions'
rule); review and commit it. Regenerate deliberately with ``pytest --force-regen`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ptq_core import checks
from ptq_core.checks import Subject
from ptq_core.platform import baseline_id
from ptq_core.predictions import predictions_on_test
from ptq_core.stats import accuracy_row

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
    subject: Subject, correct: int, predictions: np.ndarray, labels: np.ndarray, tolerance: float, here: Path
) -> None:
    for other in sorted(BASELINES.glob(f"*/{subject.id}.yml")):
        if other.parent == here:
            continue
        old = yaml.safe_load(other.read_text())
        drop = (old["correct"] - correct) * 100 / len(labels)
        if drop > tolerance:
            old_pred = np.load(other.with_suffix(".npy"))
            pytest.fail(
                f"{subject.id}: {correct} correct now vs {old['correct']} on {other.parent.name}: "
                f"a drop of {drop:.2f} points (tolerance {tolerance}). {_flipped(old_pred, predictions, labels)}"
            )


@pytest.mark.parametrize(
    "subject", [pytest.param(s, id=s.id) for s in checks.subjects(checks.CHECKS_BY_NAME["check_accuracy_vs_fp32"])]
)
def test_matches_baseline(subject: Subject, context, ws, test_split, data_regression, request) -> None:
    ctx = context(subject)
    here = BASELINES / baseline_id(subject.cell, subject.runtime)
    baseline = here / f"{subject.id}.yml"
    labels = test_split.labels
    predictions = predictions_on_test(ws, ctx.artifact, subject.runtime)
    fp32 = predictions_on_test(ws, ctx.fp32, subject.runtime)
    row = accuracy_row(predictions, labels, fp32, np.ones(len(labels), bool))
    data = {
        "correct": row["correct"],
        "agreement_fp32": round(row["agreement_fp32"], 6),
        "predictions_sha256": row["predictions_sha256"],
    }
    tolerance = request.config.getoption("ptq_tolerance")
    _compare_with_other_platforms(subject, row["correct"], predictions, labels, tolerance, here)

    regen = request.config.getoption("force_regen") or request.config.getoption("regen_all")
    if baseline.exists() and not regen:
        old = yaml.safe_load(baseline.read_text())
        if old != data:
            pytest.fail(
                f"{subject.id} changed on the same platform ({here.name}): {old['correct']} -> "
                f"{data['correct']} correct; {_flipped(np.load(baseline.with_suffix('.npy')), predictions, labels)}. "
                "Same versions should give identical predictions: if the change is intended, "
                "run `pytest --force-regen`, review and commit the diff."
            )
    else:
        here.mkdir(parents=True, exist_ok=True)
        np.save(baseline.with_suffix(".npy"), predictions.astype(np.uint8))
    data_regression.check(data, fullpath=baseline)
