"""Your classifier's checks inside your own suite: override two session fixtures in your ``conftest.py`` and
collect the checks in one test module (no command-line option)::

    # conftest.py
    import pytest

    @pytest.fixture(scope="session")
    def ptq_model():
        return "models/net.onnx"  # an FP32 ONNX classifier with a dynamic batch

    @pytest.fixture(scope="session")
    def ptq_data():
        return ((x.numpy(), y.numpy()) for x, y in test_loader)  # (images, labels) batches, read once

    # test_quantization.py
    from ptq_core.pytest_plugin.team import *  # noqa: F403  (a test per check and cell, as ptq run checks)

``ptq_data`` may also be a path as ``ptq run --data`` takes it (an .npz, images.npy, a folder of shards). Optional
fixtures, overridden the same way: ``ptq_calibration`` (batches or a path; default a stratified subset of
``ptq_data``), ``ptq_max_drop`` (points below FP32 that fail a cell; default as ``ptq run``), ``ptq_cache`` (where
built models are kept; default as ``ptq run``). ``--ptq-cells PATTERN`` selects cells, as with ``--ptq-onnx``.
"""

from __future__ import annotations

from typing import Any

import pytest

from ptq_core.pytest_plugin.checks import check_tests, parametrize
from ptq_core.pytest_plugin.fixtures import MODEL_NAME

_CHECKS = check_tests()
globals().update(_CHECKS)
__all__ = [*_CHECKS, "pytest_generate_tests"]


def cells(config: pytest.Config) -> tuple[Any, ...]:
    """The cells ``ptq_model`` is checked on, every ONNX backend's (those ``--ptq-cells`` selects), named for now
    with the default model: the model a fixture returns is read only when its first test runs (``ptq_context``
    names them with it)."""
    from ptq_core.backends import BACKENDS
    from ptq_core.errors import PTQError
    from ptq_core.matrix import cells_of
    from ptq_core.run import select_cells

    every = tuple(c for b in BACKENDS.values() if b.source == "onnx" for c in cells_of(b))
    try:
        return select_cells(every, tuple(config.getoption("ptq_cells")))
    except PTQError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per (check, cell[, runtime]) as ``ptq run`` checks them, with ids of ``ptq_model``'s cells; the
    suite's known failures belong to its own models, so none applies."""
    from ptq_core.checks import CHECKS, subjects

    params = [
        pytest.param(check, s, id=f"{MODEL_NAME}-{s.id.removeprefix(f'{s.cell.model}-')}")
        for check in CHECKS
        for s in subjects(check, cells(metafunc.config))
    ]
    parametrize(metafunc, params)
