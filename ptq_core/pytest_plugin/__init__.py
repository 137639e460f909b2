"""The suite's pytest plugin (entry point ``pytest11``), for the suite and for ``pytest --ptq-onnx`` anywhere.

One module per concern, each a plugin of its own (``pytest_plugins``):

- ``user_run``: ``--ptq-onnx MODEL --ptq-data DATA ...``: a user's classifier, its checks collected from
  ``your_model.py``;
- ``checks``: ``parametrize_with_checks`` and the ``test_<property>`` tests the suite's ``tests/test_checks.py``
  and ``your_model.py`` both collect, the ``ptq_context`` fixture;
- ``matrix``: each cell's tests in one xdist group, tagged with the cell; the matrix and the peak memory per
  process at the end;
- ``report``: ``--ptq-report DIR``;
- ``fixtures``: ``ptq_model``, ``ptq_data``, ... which a team overrides in its ``conftest.py`` to collect the
  checks in its own suite (``team.py``, star-imported by one of its test modules; not a plugin).

Which models a run checks is asked of its host by the ``pytest_ptq_store`` hook (``hooks.py``): the suite's
``conftest.py`` answers with its ``Workspace``, ``user_run`` with the user's store. With no answer (another
project's run) the plugin is inert, unless a test module collects ``team.py``'s checks: their store is then the
team's fixtures' (``ptq_team_store``).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = (
    "ptq_core.pytest_plugin.user_run",
    "ptq_core.pytest_plugin.checks",
    "ptq_core.pytest_plugin.matrix",
    "ptq_core.pytest_plugin.report",
    "ptq_core.pytest_plugin.fixtures",
)

_STORE = pytest.StashKey[Any]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from ptq_core.pytest_plugin import hooks

    pluginmanager.add_hookspecs(hooks)


def store(config: pytest.Config) -> Any:
    """The run's artifact store (``pytest_ptq_store``, asked once), or None outside a PTQ run."""
    if _STORE not in config.stash:
        config.stash[_STORE] = config.hook.pytest_ptq_store(config=config)
    return config.stash[_STORE]
