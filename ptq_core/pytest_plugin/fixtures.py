"""The session fixtures a team overrides in its ``conftest.py`` to check its classifier in its own suite
(``ptq_core.pytest_plugin.team`` collects the checks): ``ptq_model`` and ``ptq_data`` (required), ``ptq_calibration``,
``ptq_max_drop``, ``ptq_cache``; ``ptq_team_store`` opens them as ``ptq run`` opens its files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MODEL_NAME = "ptq_model"  # the model's name in the cell ids, known before the fixtures are: it names the tests


def as_data_path(data: Any, folder: Path, fixture: str) -> Path:
    """A path as given, or ``(images, labels)`` batches written to ``folder`` as shards (read back batch by batch)."""
    if isinstance(data, (str, Path)):
        return Path(data).resolve()
    if not isinstance(data, Iterable):
        raise pytest.UsageError(
            f"fixture {fixture} returned a {type(data).__name__}: return a path (.npz, images.npy, a folder of "
            "shards) or an iterable of (images, labels) batches"
        )
    for k, batch in enumerate(data):
        if not (isinstance(batch, tuple | list) and len(batch) == 2):
            raise pytest.UsageError(
                f"fixture {fixture}: batch {k} is a {type(batch).__name__}, not an (images, labels) pair: yield "
                "(images, labels) per batch, each as numpy arrays or tensors"
            )
        np.save(folder / f"images-{k:06}.npy", np.asarray(batch[0]))
        np.save(folder / f"labels-{k:06}.npy", np.asarray(batch[1]))
    return folder


@pytest.fixture(scope="session")
def ptq_model() -> Any:
    raise pytest.UsageError(
        "the checks of ptq_core.pytest_plugin.team need your model: define a session fixture ptq_model in your "
        "conftest.py returning the path of an FP32 ONNX classifier"
    )


@pytest.fixture(scope="session")
def ptq_data() -> Any:
    raise pytest.UsageError(
        "the checks of ptq_core.pytest_plugin.team need your data: define a session fixture ptq_data in your "
        "conftest.py returning (images, labels) batches or a path (.npz, images.npy, a folder of shards)"
    )


@pytest.fixture(scope="session")
def ptq_calibration() -> Any:
    return None


@pytest.fixture(scope="session")
def ptq_max_drop() -> float:
    from ptq_core.checks import MAX_ACCURACY_DROP_POINTS

    return MAX_ACCURACY_DROP_POINTS  # as ptq run --max-drop


@pytest.fixture(scope="session")
def ptq_cache() -> Any:
    return None


@pytest.fixture(scope="session")
def ptq_team_store(
    ptq_model: Any, ptq_data: Any, ptq_calibration: Any, ptq_cache: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The store of ``ptq_model`` scored on ``ptq_data`` (``ptq_core.user.UserStore``, as ``ptq run`` opens it)."""
    from ptq_core.errors import PTQError
    from ptq_core.run import RunInputs

    data = as_data_path(ptq_data, tmp_path_factory.mktemp("ptq_data"), "ptq_data")
    calibration = None
    if ptq_calibration is not None:
        calibration = as_data_path(ptq_calibration, tmp_path_factory.mktemp("ptq_calibration"), "ptq_calibration")
    inputs = RunInputs(
        Path(ptq_model).resolve(),
        data,
        calibration,
        cache_dir=Path(ptq_cache).resolve() if ptq_cache else None,
        option_prefix="--ptq-",
        name=MODEL_NAME,
    )
    try:
        return inputs.open()
    except PTQError as exc:
        raise pytest.UsageError(f"ptq_model / ptq_data: {exc}") from exc
