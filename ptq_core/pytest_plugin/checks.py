"""The checks as tests, one parametrization for the suite and a user's run (scikit-learn's
``parametrize_with_checks``).

``parametrize_with_checks(cells)`` gives one pytest param per (check, subject); ``check_tests()`` the
``test_<property>`` function of each check, which a module collects (``globals().update(check_tests())``) and
parametrizes from its ``pytest_generate_tests`` with ``parametrize(metafunc, params)``. So
``-k test_size_ratio`` selects a column, ``-k onnxruntime-u8s8`` a row, ``-k on-openvino`` a runtime.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from ptq_core.pytest_plugin import store
from ptq_core.pytest_plugin.user_run import user_run

if TYPE_CHECKING:
    from ptq_core.checks import Check, Context, Subject
    from ptq_core.matrix import Cell


def parametrize_with_checks(cells: tuple[Cell, ...], skip: Mapping[str, str] | None = None) -> list[Any]:
    """One pytest param per (check, subject) of ``cells``, values ``(check, subject)``, id the subject's.

    A known failure (``known_failure``: measured on the suite's models, so never on a user's) is
    xfail(strict=True); a check named in ``skip`` is skipped with its reason."""
    from ptq_core.checks import CHECKS, CheckFailed, subjects
    from ptq_core.known_failures import known_failure

    params = []
    for check in CHECKS:
        for s in subjects(check, cells):
            reason = known_failure(s.cell, check.name, s.runtime)
            if skip and check.name in skip:
                marks = [pytest.mark.skip(reason=skip[check.name])]
            elif reason:
                marks = [pytest.mark.xfail(reason=reason, strict=True, raises=CheckFailed)]
            else:
                marks = []
            params.append(pytest.param(check, s, id=s.id, marks=marks))
    return params


def parametrize(metafunc: pytest.Metafunc, params: list[Any]) -> None:
    """Parametrize a ``check_tests()`` function with the params of its check."""
    check = getattr(metafunc.function, "ptq_check", None)
    if check is not None:
        metafunc.parametrize(("check", "subject"), [p for p in params if p.values[0] is check])


def check_tests() -> dict[str, Callable[..., None]]:
    """``test_<property>`` for each check of ``ptq_core.checks.CHECKS``, in their order."""
    from ptq_core.checks import CHECKS

    return {test.__name__: test for test in map(_test_of, CHECKS)}


def _test_of(of: Check) -> Callable[..., None]:
    def test(check: Check, subject: Subject, ptq_context: Any, ptq_checks_not_run: Any, record_property: Any) -> None:
        if check.name in ptq_checks_not_run:
            pytest.skip(ptq_checks_not_run[check.name])
        ctx = ptq_context(subject)
        if check.name == SCORING:
            _record_accuracy(ctx, record_property)
        check.fn(ctx)

    test.__name__ = test.__qualname__ = "test_" + of.name.removeprefix("check_")
    test.__doc__ = of.fn.__doc__
    test.ptq_check = of  # type: ignore[attr-defined]
    return test


SCORING = "check_accuracy_vs_fp32"  # its tests record the cell's and FP32's accuracy on the runtime (the matrix)


def _record_accuracy(ctx: Context, record_property: Any) -> None:
    from ptq_core.checks import CheckFailed

    try:
        record_property(f"accuracy@{ctx.runtime}", ctx.result().accuracy)
        record_property(f"fp32@{ctx.runtime}", ctx.result(fp32=True).accuracy)
    except CheckFailed as exc:  # the runtime failed the evaluation: the matrix says how
        record_property(f"outcome@{ctx.runtime}", str(getattr(exc.__cause__, "outcome", "failed")))
        raise


@pytest.fixture(scope="session")
def ptq_context(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> Callable[[Subject], Context]:
    """``ptq_context(subject) -> checks.Context`` in the run's store: one per cell and process, shared by its checks.
    The store is the host's (``pytest_ptq_store``), or else a team's fixtures' (``ptq_team_store``)."""
    from ptq_core.checks import MAX_ACCURACY_DROP_POINTS, Context
    from ptq_core.options import max_drop_points

    where, run = store(pytestconfig), user_run(pytestconfig)
    team = where is None  # team.py's tests: their cells are named with the default model until this one is read
    if team:
        where = request.getfixturevalue("ptq_team_store")
        max_drop = max_drop_points(request.getfixturevalue("ptq_max_drop"), "fixture ptq_max_drop")
    else:
        max_drop = run.max_drop if run else MAX_ACCURACY_DROP_POINTS
    for_cell = functools.cache(lambda cell: Context.of(where, cell, max_drop))

    def get(subject: Subject) -> Context:
        ctx = for_cell(subject.cell.replace(model=where.model.name) if team else subject.cell)
        return ctx.on(subject.runtime) if subject.runtime else ctx

    return get


@pytest.fixture(scope="session")
def ptq_checks_not_run(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> Mapping[str, str]:
    """{check: why} of the checks a team's data cannot run (the suite and --ptq-onnx skip them at collection)."""
    if store(pytestconfig) is not None:
        return {}
    from ptq_core.run import checks_not_run

    return checks_not_run(request.getfixturevalue("ptq_team_store"))
