"""Each cell on each runtime against its committed baseline (tests/baselines/<baseline id>/<subject>.yml).

A baseline id is the CPU capability plus the versions of the libraries the cell and its runtime depend on
(``ptq_core.machine.baseline_id``), so upgrading one library meets new ids only in the cells that use it.
The rule (``ptq_core.baselines.judge``): under its own id a subject's predictions must be identical, image
for image. Under a new id, identical predictions to another id's baseline pass; a drop of more than
``--ptq-tolerance`` points fails, naming the flipped images; a smaller change or a gain passes with a
``BaselineChanged`` warning. Passing runs under a new id write their baseline for review. Regenerate
deliberately with ``pytest --force-regen`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptq_core import baselines, checks
from ptq_core.checks import Subject
from ptq_core.machine import baseline_id
from ptq_core.predictions import predictions_on_test
from ptq_core.stats import accuracy_row

BASELINES = Path(__file__).parent / "baselines"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "subject", [pytest.param(s, id=s.id) for s in checks.subjects(checks.CHECKS_BY_NAME["check_accuracy_vs_fp32"])]
)
def test_matches_baseline(subject: Subject, ptq_context, ws, test_split, request) -> None:
    ctx = ptq_context(subject)
    here = BASELINES / baseline_id(subject.cell, subject.runtime)
    labels = test_split.labels
    predictions = predictions_on_test(ws, ctx.artifact, subject.runtime, subject.cell.model)
    fp32 = predictions_on_test(ws, ctx.fp32, subject.runtime, subject.cell.model)
    row = accuracy_row(predictions, labels, fp32, np.ones(len(labels), bool))
    data = baselines.record(row["correct"], row["agreement_fp32"], row["predictions_sha256"])
    regen = request.config.getoption("force_regen") or request.config.getoption("regen_all")
    if regen:
        baselines.write(here, subject.id, data, predictions)
    else:
        verdict = baselines.judge(
            BASELINES, here, subject.id, data, predictions, labels, request.config.getoption("ptq_tolerance")
        )
        if verdict.write:
            baselines.write(here, subject.id, data, predictions)
        if not verdict.passed:
            pytest.fail(verdict.message)
