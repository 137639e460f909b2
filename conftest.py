"""This repository's suite: where its data, weights and artifacts are, and its session fixtures (the real data,
the FP32 models and every quantized cell, each built once).

Artifacts go through ``ptq_core.cache.build_once`` (file lock + atomic rename + recorded key), so
xdist workers share one build and a second run reuses it. The hooks (the matrix, ``--ptq-report``, the
peak memory) and the checks' tests are the pytest plugin's (``ptq_core/pytest_plugin/``), which asks
``pytest_ptq_store`` for the suite's ``Workspace``.
"""

from __future__ import annotations

import functools
import gc
import os
from pathlib import Path

import pytest

from ptq_core import Workspace
from ptq_core.calibration import CalibrationConfig
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


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Each process's last step: after pytest's own end-of-run collection (unraisable exceptions), freeze what
    is left so the interpreter's exit does not walk it again. With torch, OpenVINO and the session's arrays
    alive, that walk kept each xdist worker up ~2 s after its last test, and the run waited for it."""
    gc.freeze()


@pytest.hookimpl(optionalhook=True)  # the plugin's (ptq_core/pytest_plugin/hooks.py)
def pytest_ptq_store(config: pytest.Config) -> Workspace:
    models = config.getoption("models_dir") or os.environ.get("PTQ_MODELS_DIR") or Path(config.rootpath) / "models"
    return Workspace.locate(config.getoption("cifar10_dir"), config.getoption("resnet8_h5"), models)


@pytest.fixture(scope="session")
def ws(pytestconfig: pytest.Config) -> Workspace:
    from ptq_core.pytest_plugin import store

    return store(pytestconfig)  # type: ignore[no-any-return]


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
