"""The checks on a user's ONNX classifier, one test per (check, cell[, runtime]), collected when
``--ptq-onnx`` is given (``user_run``): the same tests and parametrization as the suite's
``tests/test_checks.py``. The suite's known failures belong to its own models, so none applies here."""

from __future__ import annotations

import pytest

from ptq_core.pytest_plugin.checks import check_tests, parametrize, parametrize_with_checks
from ptq_core.pytest_plugin.user_run import user_run

globals().update(check_tests())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from ptq_core.run import checks_not_run

    run = user_run(metafunc.config)
    assert run is not None, "collected by pytest --ptq-onnx only"
    parametrize(metafunc, parametrize_with_checks(run.cells, skip=checks_not_run(run.inputs.open())))
