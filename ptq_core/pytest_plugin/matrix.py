"""Each cell's tests in one xdist group and tagged with the cell; at the end, the matrix (one row per cell, its
checks and its accuracy) and the peak memory of each process."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import pytest

from ptq_core.pytest_plugin import store


def cell_of(item: pytest.Item) -> Any:
    """The cell a test is about (a ``Cell`` or ``Subject`` param), else None."""
    matrix, checks = sys.modules.get("ptq_core.matrix"), sys.modules.get("ptq_core.checks")
    if matrix is None:  # nothing imported it: no test has a cell (the plugin stays light in other projects)
        return None
    for value in getattr(getattr(item, "callspec", None), "params", {}).values():
        cell = value.cell if checks is not None and isinstance(value, checks.Subject) else value
        if isinstance(cell, matrix.Cell):
            return cell
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One xdist group per cell (``--dist loadgroup``): a cell's checks run in one worker, which loads
    and inspects its artifact once."""
    for item in items:
        cell = cell_of(item)
        if cell is not None:
            item.add_marker(pytest.mark.xdist_group(cell.id))


class UngroupedWarning(pytest.PytestWarning):
    """pytest-xdist ran under ``--dist loadgroup`` but left tests of an ``xdist_group`` ungrouped."""


def ungrouped(items: list[pytest.Item]) -> list[str]:
    """Tests with an ``xdist_group`` mark whose id lacks the ``@group`` suffix by which pytest-xdist's loadgroup
    scheduler keeps a group in one worker (pytest-xdist 3.8.0 under pytest 9.2.0 writes it where pytest no
    longer reads it: pytest-xdist issue 1386)."""
    return [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]


def pytest_collection_finish(session: pytest.Session) -> None:
    if not getattr(session.config.option, "loadgroup", False):  # set in each worker of a --dist loadgroup run
        return
    if missed := ungrouped(session.items):
        from importlib.metadata import version

        warnings.warn(
            UngroupedWarning(
                f"pytest-xdist {version('pytest-xdist')} did not group {len(missed)} tests by their xdist_group "
                f"mark under pytest {pytest.__version__} (e.g. {missed[0]}), so a group's tests run in several "
                "workers, each building or loading what they share; install pytest<9.2 (pytest-xdist issue 1386)"
            ),
            stacklevel=1,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Tag each report with the cell it is about, so the summary groups by cell without parsing test ids."""
    report = yield
    cell = cell_of(item)
    if cell is not None:
        report.user_properties.append(("cell", cell.id))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The whole matrix at a glance: one row per cell, its checks and its accuracy."""
    cells: dict[str, dict[str, object]] = {}
    for outcome in ("passed", "failed", "xfailed", "xpassed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            props = dict(getattr(report, "user_properties", ()))
            if "cell" not in props or getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if report.when == "setup" and outcome == "passed":
                continue
            row = cells.setdefault(props["cell"], {"passed": 0, "failed": 0, "xfailed": 0, "skipped": 0})
            key = "failed" if outcome in ("error", "xpassed") else outcome
            row[key] = int(row[key]) + 1  # type: ignore[call-overload]
            row.update(dict(report.user_properties))
    if not cells and store(config) is None:
        return
    peaks = config.stash.get(_PEAK_RSS, {}) or {"main": _peak_rss_mib()}
    terminalreporter.write_line(
        "peak memory per process: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in sorted(peaks.items()))
    )
    if not cells:
        return
    terminalreporter.write_sep("=", "PTQ matrix (accuracy on the test images; Δ against FP32 on the same runtime)")
    terminalreporter.write_line(f"{'cell':58} {'accuracy, Δ pts, by runtime':>40} {'checks':>8}  result")
    for cell in sorted(cells):
        row = cells[cell]
        accs = sorted((k.split("@", 1)[1], v) for k, v in row.items() if k.startswith(("accuracy@", "outcome@")))
        acc_text = "  ".join(
            f"{rt} {acc:.2%} {(acc - float(row['fp32@' + rt])) * 100:+.2f}"  # type: ignore[arg-type, operator]
            if "fp32@" + rt in row
            else f"{rt} {acc}"  # the outcome of an evaluation that failed
            for rt, acc in accs
        )
        total = sum(int(row[k]) for k in ("passed", "failed", "xfailed", "skipped"))  # type: ignore[call-overload]
        result = (
            "FAIL" if row["failed"] else "known failure" if row["xfailed"] else "skipped" if row["skipped"] else "ok"
        )
        terminalreporter.write_line(f"{cell:58} {acc_text:>40} {row['passed']:>3}/{total:<4}  {result}")
    _point_to_the_blame(terminalreporter, config, cells)


def _point_to_the_blame(terminalreporter: Any, config: pytest.Config, cells: dict[str, dict[str, object]]) -> None:
    """Where to see which layers lose it, for the evaluations more than half the allowed drop below FP32 (the
    report blames them, ``ptq_core.blame_report``; pytest only scores them)."""
    from ptq_core.blame_report import SHARE
    from ptq_core.checks import MAX_ACCURACY_DROP_POINTS
    from ptq_core.pytest_plugin.user_run import user_run

    if config.getoption("ptq_report", None):
        return  # the report's blame headlines follow
    run = user_run(config)
    allowed = (run.max_drop if run else MAX_ACCURACY_DROP_POINTS) * SHARE
    dropping = [
        f"{cell} on {key.split('@', 1)[1]}"
        for cell, row in sorted(cells.items())
        for key, acc in row.items()
        if key.startswith("accuracy@")
        and f"fp32@{key.split('@', 1)[1]}" in row
        and (float(row[f"fp32@{key.split('@', 1)[1]}"]) - float(acc)) * 100 > allowed  # type: ignore[arg-type]
    ]
    if dropping:
        how = (
            "rerun with --ptq-report DIR"
            if run
            else "`python -m ptq_core explain CELL --runtime RT`, or --ptq-report DIR"
        )
        terminalreporter.write_line(
            f"{len(dropping)} evaluations are more than {allowed:g} points below FP32 ({', '.join(dropping[:3])}"
            + (", ..." if len(dropping) > 3 else "")
            + f"): which layers lose it: {how} (the blame of every one, in results.md)"
        )


_PEAK_RSS = pytest.StashKey[dict]()


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's
def pytest_testnodedown(node: Any, error: Any) -> None:
    peaks = node.config.stash.setdefault(_PEAK_RSS, {})
    peaks[node.gateway.id] = node.workeroutput.get("peak_rss_mib", float("nan"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):
        session.config.workeroutput["peak_rss_mib"] = _peak_rss_mib()  # type: ignore[attr-defined]
