"""Session fixtures: the real data, the FP32 models and every quantized cell, each built once.

Artifacts go through ``ptq_core.cache.build_once`` (file lock + atomic rename + recorded key), so
xdist workers share one build and a second run reuses it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from ptq_core import Workspace
from ptq_core.calibration import CalibrationConfig
from ptq_core.checks import Context, Subject
from ptq_core.eval import EvalResult
from ptq_core.matrix import Cell
from ptq_core.predictions import result_on_test

# How far a legitimate kernel change moves a cell: the same QDQ file on ONNX Runtime 1.32 and OpenVINO
# 2026.4 (f32 hint) differs by at most 21 of 10,000 images (0.21 points, 22 ONNX cells). The library
# changes tried moved less: onnxruntime 1.31.1 and numpy 2.3.5 flipped no image; every floor at once
# (tox -e min: OpenVINO 2026.0) changed 7 cells on OpenVINO, the worst by a net 6 images (0.06 points).
DEFAULT_TOLERANCE_POINTS = 0.25


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ptq", "PTQ accuracy suite")
    group.addoption(
        "--cifar10-dir",
        metavar="DIR",
        help="cifar-10-batches-py folder (else $PTQ_CIFAR10_DIR, the cache, or a download)",
    )
    group.addoption(
        "--resnet8-h5", metavar="FILE", help="pretrainedResnet.h5 (else $PTQ_RESNET8_H5, the cache, or a download)"
    )
    group.addoption("--models-dir", metavar="DIR", help="where artifacts are built (default <rootdir>/models)")
    group.addoption(
        "--ptq-tolerance",
        metavar="POINTS",
        type=float,
        default=DEFAULT_TOLERANCE_POINTS,
        help=f"accuracy drop against another library stack's baseline that fails a cell (default "
        f"{DEFAULT_TOLERANCE_POINTS}: the widest gap measured between two int8 kernel sets on one file)",
    )
    group.addoption(
        "--ptq-report", metavar="DIR", help="at the end of the run, write results.json, results.md and plots to DIR"
    )


@pytest.fixture(scope="session")
def ws(pytestconfig: pytest.Config) -> Workspace:
    return _workspace(pytestconfig)


def _workspace(config: pytest.Config) -> Workspace:
    models = config.getoption("models_dir") or os.environ.get("PTQ_MODELS_DIR") or Path(config.rootpath) / "models"
    return Workspace.locate(config.getoption("cifar10_dir"), config.getoption("resnet8_h5"), models)


@pytest.fixture(scope="session")
def test_split(ws: Workspace):  # type: ignore[no-untyped-def]
    return ws.split("test")


@pytest.fixture(scope="session")
def calibration(ws: Workspace):  # type: ignore[no-untyped-def]
    return ws.calibration(CalibrationConfig())


@pytest.fixture(scope="session")
def fp32_onnx(ws: Workspace) -> Path:
    return ws.fp32("onnx")


@pytest.fixture(scope="session")
def fp32_pt2(ws: Workspace) -> Path:
    return ws.fp32("pt2")


@pytest.fixture(scope="session")
def evaluated(ws: Workspace):  # type: ignore[no-untyped-def]
    """``evaluated(path, runtime=None) -> EvalResult`` on the 10,000 test images, cached on disk by model digest."""

    @functools.cache
    def evaluate(path: Path, runtime: str | None = None) -> EvalResult:
        return result_on_test(ws, path, runtime)

    return evaluate


@pytest.fixture(scope="session")
def quantized(ws: Workspace):  # type: ignore[no-untyped-def]
    """``quantized(cell) -> Path`` of the cell's artifact, built once across workers and runs."""
    return functools.cache(lambda cell: ws.quantized(cell))


@pytest.fixture
def artifact(quantized, cell: Cell) -> Path:  # type: ignore[no-untyped-def]
    return quantized(cell)


@pytest.fixture(scope="session")
def context(ws: Workspace):  # type: ignore[no-untyped-def]
    """``context(subject) -> checks.Context``: one per cell and worker, shared by its checks."""
    for_cell = functools.cache(lambda cell: Context.of(ws, cell))

    def get(subject: Subject) -> Context:
        ctx = for_cell(subject.cell)
        return ctx.on(subject.runtime) if subject.runtime else ctx

    return get


def _cell_of(item: pytest.Item) -> Cell | None:
    for value in getattr(getattr(item, "callspec", None), "params", {}).values():
        cell = value.cell if isinstance(value, Subject) else value
        if isinstance(cell, Cell):
            return cell
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One xdist group per cell (``--dist loadgroup``): a cell's checks run in one worker, which loads
    and inspects its artifact once."""
    for item in items:
        cell = _cell_of(item)
        if cell is not None:
            item.add_marker(pytest.mark.xdist_group(cell.id))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    """Tag each report with the cell it is about, so the summary groups by cell without parsing test ids."""
    report = yield
    cell = _cell_of(item)
    if cell is not None:
        report.user_properties.append(("cell", cell.id))
    return report


def pytest_configure(config: pytest.Config) -> None:
    report_dir = config.getoption("ptq_report", None)
    if report_dir and not hasattr(config, "workerinput"):
        config.stash[_REPORT_DIR] = Path(report_dir)


_REPORT_DIR = pytest.StashKey[Path]()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
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
    peaks = config.stash.get(_PEAK_RSS, {}) or {"main": _peak_rss_mib()}
    terminalreporter.write_line(
        "peak memory per process: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in sorted(peaks.items()))
    )
    if not cells:
        return
    terminalreporter.write_sep("=", "PTQ matrix (accuracy on 10,000 test images; Δ against FP32 on the same runtime)")
    terminalreporter.write_line(f"{'cell':58} {'accuracy, Δ pts, by runtime':>40} {'checks':>8}  result")
    for cell in sorted(cells):
        row = cells[cell]
        accs = sorted((k.split("@", 1)[1], v) for k, v in row.items() if k.startswith(("accuracy@", "outcome@")))
        acc_text = "  ".join(
            f"{rt} {acc:.2%} {(acc - float(row['fp32@' + rt])) * 100:+.2f}"  # type: ignore[arg-type]
            if "fp32@" + rt in row
            else f"{rt} {acc}"  # the outcome of an evaluation that failed
            for rt, acc in accs
        )
        total = sum(int(row[k]) for k in ("passed", "failed", "xfailed", "skipped"))  # type: ignore[call-overload]
        result = (
            "FAIL" if row["failed"] else "known failure" if row["xfailed"] else "skipped" if row["skipped"] else "ok"
        )
        terminalreporter.write_line(f"{cell:58} {acc_text:>40} {row['passed']:>3}/{total:<4}  {result}")


_PEAK_RSS = pytest.StashKey[dict]()


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    peaks = node.config.stash.setdefault(_PEAK_RSS, {})
    peaks[node.gateway.id] = node.workeroutput.get("peak_rss_mib", float("nan"))


_CELLS_RUN: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    cell = dict(report.user_properties).get("cell")
    if cell:
        _CELLS_RUN.add(str(cell))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        session.config.workeroutput["peak_rss_mib"] = _peak_rss_mib()  # type: ignore[attr-defined]
    out = session.config.stash.get(_REPORT_DIR, None)
    if out is None or exitstatus not in (0, 1):
        return
    from ptq_core import render, report
    from ptq_core.matrix import CELLS
    from ptq_core.speed import latest_benchmarks

    ws = _workspace(session.config)
    if session.config.getoption("splits", None):  # a shard (pytest-split): the cells it ran, for `ptq report --merge`
        cells = tuple(c for c in CELLS if c.id in _CELLS_RUN)
        results = report.build(ws, studies=False, archive=False, cells=cells)
    else:
        results = report.build(ws, benchmarks=latest_benchmarks())
    paths = render.write(results, out)
    session.config.pluginmanager.get_plugin("terminalreporter").write_line(
        "PTQ report: " + ", ".join(str(p) for p in paths)
    )
