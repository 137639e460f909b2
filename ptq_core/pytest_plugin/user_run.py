"""``pytest --ptq-onnx MODEL.onnx --ptq-data DATA.npz``: the checks of ``ptq run`` on a user's classifier as
parametrized tests, from any directory.

Inert unless ``--ptq-onnx`` is given; then the run collects ``your_model.py`` only, and its store is the
user's (``pytest_ptq_store``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ptq_core.options import max_drop_points  # light: the plugin loads in every pytest run

CHECKS_MODULE = Path(__file__).with_name("your_model.py")


class UserRun(NamedTuple):
    inputs: Any  # ptq_core.run.RunInputs
    cells: tuple[Any, ...]  # the cells --ptq-cells selects
    max_drop: float


_RUN = pytest.StashKey[UserRun]()


def _max_drop(text: str) -> float:
    """``--ptq-max-drop``: the validator of ``ptq run --max-drop`` (a bad value is a pytest UsageError)."""
    return max_drop_points(text, "--ptq-max-drop")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ptq-run", "the suite's checks on your own ONNX classifier (as `ptq run`)")
    group.addoption("--ptq-onnx", metavar="MODEL.onnx", help="an FP32 ONNX classifier: check every cell on it")
    group.addoption(
        "--ptq-data",
        metavar="DATA",
        help="`images` as the model takes them and `labels`: they score it (as ptq run's --data: .npz, images.npy, "
        "a folder of shards)",
    )
    group.addoption(
        "--ptq-calibration",
        metavar="CALIB",
        help="`images` (and `labels`) to calibrate from (default: a stratified subset of --ptq-data)",
    )
    group.addoption(
        "--ptq-max-drop",
        metavar="POINTS",
        type=_max_drop,
        help="accuracy drop against FP32 that fails a cell (default: as ptq run --max-drop)",
    )
    group.addoption(
        "--ptq-cells",
        metavar="PATTERN",
        action="append",
        default=[],
        help="only cells matching the pattern, e.g. 'onnxruntime-u8s8-*' (repeatable; default: all)",
    )
    group.addoption("--ptq-cache", metavar="DIR", help="where built models are kept (default as `ptq run`)")
    group.addoption(
        "--ptq-output",
        metavar="NAME",
        help="the output that holds the (N, classes) scores (default: the model's first)",
    )


def pytest_configure(config: pytest.Config) -> None:
    onnx = config.getoption("ptq_onnx", None)
    if not onnx:
        return
    from ptq_core.errors import PTQError
    from ptq_core.run import RunInputs, user_cells

    data = config.getoption("ptq_data")
    if not data:
        raise pytest.UsageError("--ptq-onnx needs --ptq-data DATA.npz: the images (as the model takes them) and labels")
    calibration, cache = config.getoption("ptq_calibration"), config.getoption("ptq_cache")
    inputs = RunInputs(
        Path(onnx).resolve(),
        Path(data).resolve(),
        Path(calibration).resolve() if calibration else None,
        cache_dir=Path(cache).resolve() if cache else None,
        output=config.getoption("ptq_output"),
        option_prefix="--ptq-",
    )
    try:
        cells = user_cells(inputs.open(), tuple(config.getoption("ptq_cells")))
    except PTQError as exc:
        raise pytest.UsageError(str(exc)) from exc
    from ptq_core.checks import MAX_ACCURACY_DROP_POINTS

    max_drop = config.getoption("ptq_max_drop")
    config.stash[_RUN] = UserRun(inputs, cells, MAX_ACCURACY_DROP_POINTS if max_drop is None else max_drop)
    config.args[:] = [str(CHECKS_MODULE)]  # the checks of this model, not the tests of the folder it runs in


def user_run(config: pytest.Config) -> UserRun | None:
    """The inputs, cells and max drop of a ``--ptq-onnx`` run; None in any other run."""
    return config.stash.get(_RUN, None)


@pytest.hookimpl(tryfirst=True)  # before the suite's conftest.py, when run inside the repository
def pytest_ptq_store(config: pytest.Config) -> Any:
    run = user_run(config)
    return run.inputs.open() if run else None
