"""Session fixtures: the real data, the FP32 models and every quantized cell, each built once.

Artifacts go through ``ptq_core.cache.build_once`` (file lock + atomic rename + recorded key), so
xdist workers share one build and a second run reuses it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from ptq_core import Workspace
from ptq_core.calibration import CalibrationConfig
from ptq_core.eval import EvalResult
from ptq_core.matrix import Cell
from ptq_core.predictions import result_on_test


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ptq", "PTQ accuracy suite")
    group.addoption("--cifar10-dir", metavar="DIR", help="cifar-10-batches-py folder (else $PTQ_CIFAR10_DIR, "
                    "the cache, or a download)")
    group.addoption("--resnet8-h5", metavar="FILE", help="pretrainedResnet.h5 (else $PTQ_RESNET8_H5, the cache, "
                    "or a download)")
    group.addoption("--models-dir", metavar="DIR", help="where artifacts are built (default <rootdir>/models)")


@pytest.fixture(scope="session")
def ws(pytestconfig: pytest.Config) -> Workspace:
    models = pytestconfig.getoption("models_dir") or None
    if models is None:
        import os

        models = os.environ.get("PTQ_MODELS_DIR") or Path(pytestconfig.rootpath) / "models"
    return Workspace.locate(pytestconfig.getoption("cifar10_dir"), pytestconfig.getoption("resnet8_h5"), models)


@pytest.fixture(scope="session")
def test_split(ws: Workspace):  # type: ignore[no-untyped-def]
    return ws.split("test")


@pytest.fixture(scope="session")
def calibration(ws: Workspace):  # type: ignore[no-untyped-def]
    return ws.calibration(CalibrationConfig())


@pytest.fixture(scope="session")
def fp32_onnx(ws: Workspace) -> Path:
    return ws.fp32_onnx()


@pytest.fixture(scope="session")
def fp32_pt(ws: Workspace) -> Path:
    return ws.fp32_pt()


@pytest.fixture(scope="session")
def evaluated(ws: Workspace):  # type: ignore[no-untyped-def]
    """``evaluated(path) -> EvalResult`` on the 10,000 test images, cached on disk by model digest."""

    @functools.cache
    def evaluate(path: Path) -> EvalResult:
        return result_on_test(ws, path)

    return evaluate


@pytest.fixture(scope="session")
def quantized(ws: Workspace):  # type: ignore[no-untyped-def]
    """``quantized(cell) -> Path`` of the cell's artifact, built once across workers and runs."""
    return functools.cache(lambda cell: ws.quantized(cell))


@pytest.fixture
def artifact(quantized, cell: Cell) -> Path:  # type: ignore[no-untyped-def]
    return quantized(cell)
