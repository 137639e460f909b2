"""``--ptq-report DIR``: at the end of the run, results.json, results.md and plots of the run's store
(``ptq_core.results``, as ``ptq report`` and ``ptq run`` write them). A shard (pytest-split's ``--splits``)
reports the cells it ran, for ``ptq report --merge``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ptq_core.pytest_plugin import store
from ptq_core.pytest_plugin.user_run import user_run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("ptq", "PTQ accuracy suite").addoption(
        "--ptq-report", metavar="DIR", help="at the end of the run, write results.json, results.md and plots to DIR"
    )


def pytest_configure(config: pytest.Config) -> None:
    out = config.getoption("ptq_report", None)
    if out and not hasattr(config, "workerinput"):  # the controller writes it, from its workers' reports
        config.pluginmanager.register(Report(config, Path(out)), "ptq-report")


class Report:
    def __init__(self, config: pytest.Config, out: Path) -> None:
        self.config, self.out = config, out
        self.cells_run: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        cell = dict(report.user_properties).get("cell")
        if cell:
            self.cells_run.add(str(cell))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus not in (0, 1):
            return
        where = store(self.config)
        if where is None:
            raise pytest.UsageError("--ptq-report: not a PTQ run (the suite's tests, or pytest --ptq-onnx)")
        from ptq_core import render
        from ptq_core.blame_report import headlines

        terminal = session.config.pluginmanager.get_plugin("terminalreporter")
        results = self.results(where, lambda line: terminal.write_line(f"PTQ report: {line}"))
        paths = render.write(results, self.out)
        for line in headlines(results):
            terminal.write_line(line)
        terminal.write_line("PTQ report: " + ", ".join(str(p) for p in paths))

    def results(self, where: Any, say: Callable[[str], None]) -> dict[str, Any]:
        from ptq_core import blame_report, report
        from ptq_core.matrix import CELLS
        from ptq_core.results import collect, failed_evaluations

        run = user_run(self.config)
        cells = run.cells if run else CELLS
        shard = bool(self.config.getoption("splits", None))  # pytest-split: the cells it ran
        if shard:
            cells = tuple(c for c in cells if c.id in self.cells_run)
        if run:
            results = collect(where, cells, run.max_drop, fp32_of=(where.model.name,))
            results["failed_evaluations"] = failed_evaluations(results)
            blame_report.add(where, results, cells, say)
            return results
        if shard:
            return report.build(where, studies=False, archive=False, cells=cells, say=say)
        from ptq_core.speed import latest_benchmarks

        return report.build(where, benchmarks=latest_benchmarks(), say=say)
