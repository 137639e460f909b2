"""Every check of ``ptq_core.checks`` on every cell it applies to: ``test_<property>`` per check, the tests and
the parametrization a user's ``pytest --ptq-onnx`` run collects too (``ptq_core.pytest_plugin.checks``).

``-k resnet8-onnxruntime-u8s8`` selects a row, ``-k test_size_ratio`` a column, ``-k on-openvino`` a
runtime. Known failures are data in ``ptq_core.known_failures`` (xfail, strict).
"""

from __future__ import annotations

import pytest

from ptq_core import checks
from ptq_core.checks import Subject
from ptq_core.matrix import CELLS, Cell
from ptq_core.pytest_plugin.checks import check_tests, parametrize, parametrize_with_checks

pytestmark = pytest.mark.slow

globals().update(check_tests())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize(metafunc, parametrize_with_checks(CELLS))


@pytest.mark.parametrize(
    "cell", [pytest.param(c, id=c.id) for c in (Cell("nncf"), Cell("onnxruntime", "u8s8", "distribution"))]
)
def test_run_checks_outside_pytest_agrees_with_the_known_failures(cell: Cell, ptq_context) -> None:
    """``run_checks`` (what a user calls on their own artifacts) fails exactly the checks known to fail."""
    outcomes = list(checks.run_checks(lambda c: ptq_context(Subject(c)), (cell,)))
    assert len(outcomes) == {"nncf": 12, "onnxruntime": 13}[cell.backend]  # 6 + ORT's calibrator; 3 x 2 runtimes
    unexpected = [(o.subject.id, o.check, o.message) for o in outcomes if o.passed == bool(o.expected_failure)]
    assert not unexpected
