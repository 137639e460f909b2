"""The hook the plugin asks its host (``pytest_addhooks``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_ptq_store(config: pytest.Config) -> Any:
    """The artifact store the run checks and reports on: ``ptq_core.workspace.Workspace`` (the suite's
    ``conftest.py``), ``ptq_core.user.UserStore`` (``--ptq-onnx``); None: not a PTQ run."""
