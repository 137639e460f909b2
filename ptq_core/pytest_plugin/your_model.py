"""The checks library on a user's ONNX classifier, one test per (check, cell[, runtime]).

Collected by the pytest plugin (``ptq_core/pytest_plugin.py``) when ``--ptq-onnx`` is given. A check that
fails on the suite's own models is xfail here, not strict: it was measured on those models, not this one.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from ptq_core.checks import CHECKS, Check, Subject, known_failure, subjects
from ptq_core.pytest_plugin import run_inputs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from ptq_core.run import checks_not_run

    inputs, cells, _ = run_inputs(metafunc.config)
    skipped = checks_not_run(inputs.open())
    params = []
    for check in CHECKS:
        for s in subjects(check, cells):
            marks: list[Any] = []
            reason = known_failure(s.cell, check.name, s.runtime)
            if check.name in skipped:
                marks.append(pytest.mark.skip(reason=skipped[check.name]))
            elif reason:
                marks.append(pytest.mark.xfail(reason=f"fails on the suite's models: {reason}", strict=False))
            params.append(pytest.param(check, s, id=f"{check.name}-{s.id}", marks=marks))
    metafunc.parametrize(("check", "subject"), params)


@pytest.fixture(scope="session")
def ptq_context(pytestconfig: pytest.Config) -> Any:
    from ptq_core.run import context

    inputs, _, max_drop = run_inputs(pytestconfig)
    return functools.cache(context(inputs.open(), max_drop))


def test_check(check: Check, subject: Subject, ptq_context: Any) -> None:
    ctx = ptq_context(subject.cell)
    check.fn(ctx.on(subject.runtime) if subject.runtime else ctx)
