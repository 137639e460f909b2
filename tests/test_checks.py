"""Every check of ``ptq_core.checks`` on every cell it applies to: one thin test per property.

``-k resnet8-onnxruntime-u8s8`` selects a row, ``-k test_size_ratio`` a column, ``-k on-openvino`` a
runtime. Known failures are data in ``ptq_core.checks.KNOWN_FAILURES`` (xfail, strict).
"""

from __future__ import annotations

import pytest

from ptq_core import checks
from ptq_core.checks import Subject, pytest_params
from ptq_core.evaluation import Outcome
from ptq_core.matrix import Cell

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("subject", pytest_params(checks.check_output_shape))
def test_output_shape(subject: Subject, context) -> None:
    checks.check_output_shape(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_calibration_stratified))
def test_calibration_stratified(subject: Subject, context) -> None:
    checks.check_calibration_stratified(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_weights_are_8bit))
def test_weights_are_8bit(subject: Subject, context) -> None:
    checks.check_weights_are_8bit(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_runs_8bit_on_openvino))
def test_runs_8bit_on_openvino(subject: Subject, context) -> None:
    checks.check_runs_8bit_on_openvino(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_dtypes_as_named))
def test_dtypes_as_named(subject: Subject, context) -> None:
    checks.check_dtypes_as_named(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_granularity_as_named))
def test_granularity_as_named(subject: Subject, context) -> None:
    checks.check_granularity_as_named(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_size_ratio))
def test_size_ratio(subject: Subject, context) -> None:
    checks.check_size_ratio(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_accuracy_vs_fp32))
def test_accuracy_vs_fp32(subject: Subject, context, record_property) -> None:
    ctx = context(subject)
    try:
        record_property(f"accuracy@{subject.runtime}", ctx.result().accuracy)
        record_property(f"fp32@{subject.runtime}", ctx.result(fp32=True).accuracy)
    except checks.CheckFailed as exc:  # the runtime failed the evaluation: the matrix says how
        outcome = next((o for o in Outcome if f": {o}: " in str(exc) or f"FP32 {o}: " in str(exc)), "failed")
        record_property(f"outcome@{subject.runtime}", str(outcome))
        raise
    checks.check_accuracy_vs_fp32(ctx)


@pytest.mark.parametrize("subject", pytest_params(checks.check_no_class_collapses))
def test_no_class_collapses(subject: Subject, context) -> None:
    checks.check_no_class_collapses(context(subject))


@pytest.mark.parametrize("subject", pytest_params(checks.check_calibrator_changes_activation_ranges))
def test_calibrator_changes_activation_ranges(subject: Subject, context) -> None:
    checks.check_calibrator_changes_activation_ranges(context(subject))


def test_every_check_has_a_test() -> None:
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert {c.name.removeprefix("check_") for c in checks.CHECKS} <= tested


@pytest.mark.parametrize(
    "cell", [pytest.param(c, id=c.id) for c in (Cell("nncf"), Cell("onnxruntime", "u8s8", "distribution"))]
)
def test_run_checks_outside_pytest_agrees_with_the_known_failures(cell: Cell, context) -> None:
    """``run_checks`` (what a user calls on their own artifacts) fails exactly the checks known to fail."""
    outcomes = list(checks.run_checks(lambda c: context(Subject(c)), (cell,)))
    assert len(outcomes) == {"nncf": 12, "onnxruntime": 13}[cell.backend]  # 6 + ORT's calibrator; 3 x 2 runtimes
    unexpected = [(o.subject.id, o.check, o.message) for o in outcomes if o.passed == bool(o.expected_failure)]
    assert not unexpected
