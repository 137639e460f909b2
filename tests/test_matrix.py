"""The matrix declaration: ids are test ids and baseline names, so they are pinned by a table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ptq_core.backends import BACKENDS
from ptq_core.checks import CHECKS
from ptq_core.errors import PTQError
from ptq_core.known_failures import EVALUATION, KNOWN_FAILURES, known_failure
from ptq_core.matrix import CELLS, Cell, cells_of
from ptq_core.pytest_plugin.matrix import UngroupedWarning, pytest_collection_finish, ungrouped


@pytest.mark.parametrize(
    "cell, cell_id, artifact",
    [
        (
            Cell("onnxruntime", "u8s8"),
            "resnet8-onnxruntime-u8s8-minmax-per_channel",
            "resnet8-onnxruntime-u8s8-minmax-per_channel.onnx",
        ),
        (
            Cell("onnxruntime", "int8", "entropy", "per_tensor"),
            "resnet8-onnxruntime-int8-entropy-per_tensor",
            "resnet8-onnxruntime-int8-entropy-per_tensor.onnx",
        ),
        (
            Cell("pytorch", "uint8", "histogram"),
            "resnet8-pytorch-uint8-histogram-per_channel",
            "resnet8-pytorch-uint8-histogram-per_channel.pt2",
        ),
        (Cell("pytorch"), "resnet8-pytorch-uint8-minmax-per_channel", "resnet8-pytorch-uint8-minmax-per_channel.pt2"),
        (
            Cell("nncf", "mixed", "no_bias_correction"),
            "resnet8-nncf-mixed-no_bias_correction-per_channel",
            "resnet8-nncf-mixed-no_bias_correction-per_channel.onnx",
        ),
    ],
)
def test_cell_id_and_artifact_name(cell: Cell, cell_id: str, artifact: str) -> None:
    assert cell.id == cell_id
    assert cell.artifact_name == artifact


def test_cells_are_unique_and_every_backend_declares_its_own() -> None:
    ids = [c.id for c in CELLS]
    resnet8 = [c for c in CELLS if c.model == "resnet8"]
    assert len(ids) == len(set(ids))
    assert len(resnet8) == sum(len(cells_of(b)) for b in BACKENDS.values())
    assert [len(cells_of(BACKENDS[name])) for name in ("onnxruntime", "pytorch", "nncf")] == [24, 16, 4]


def test_mobilenet_runs_each_backends_default_at_every_granularity() -> None:
    assert sorted(c.id for c in CELLS if c.model == "mobilenetv1") == [
        "mobilenetv1-nncf-performance-fast_bias_correction-per_channel",
        "mobilenetv1-onnxruntime-u8s8-minmax-per_channel",
        "mobilenetv1-onnxruntime-u8s8-minmax-per_tensor",
        "mobilenetv1-pytorch-uint8-minmax-per_channel",
        "mobilenetv1-pytorch-uint8-minmax-per_tensor",
    ]


def test_known_failures_name_real_cells_and_checks() -> None:
    names = {c.name for c in CHECKS} | {EVALUATION}
    for known in KNOWN_FAILURES:
        assert set(known.checks) <= names
        assert any(c.model in known.models and known.applies(c) for c in CELLS)
    for cpu in ("avx512vnni", "amx"):  # on ONNX Runtime, only the distribution cells fail there
        failing = {c.id for c in CELLS if known_failure(c, "check_accuracy_vs_fp32", "onnxruntime", cpu)}
        assert failing == {c.id for c in CELLS if c.calibrator == "distribution"}
    # without VNNI, ORT's u8s8 kernels saturate: two more, measured on the AVX2-only EPYC
    failing = {c.id for c in CELLS if known_failure(c, "check_accuracy_vs_fp32", "onnxruntime", "avx2")}
    saturated = {"resnet8-onnxruntime-u8s8-entropy-per_channel", "mobilenetv1-onnxruntime-u8s8-minmax-per_channel"}
    assert failing == {c.id for c in CELLS if c.calibrator == "distribution"} | saturated


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "tflite", "dtype": "int8"}, r"unknown backend 'tflite': choose one of onnxruntime, pytorch, nncf"),
        ({"backend": "pytorch", "dtype": "u8s8"}, r"unknown pytorch dtype 'u8s8': choose one of uint8, int8"),
        ({"backend": "onnxruntime", "dtype": "int8", "calibrator": "histogram"}, r"calibrator 'histogram'"),
        ({"backend": "onnxruntime", "dtype": "int8", "granularity": "per_row"}, r"granularity 'per_row'"),
        ({"backend": "nncf", "granularity": "per_tensor"}, r"unknown nncf granularity 'per_tensor'"),
        (
            {"backend": "onnxruntime", "model": "resnet50"},
            r"unknown model 'resnet50': choose one of resnet8, mobilenetv1",
        ),
    ],
)
def test_unknown_option_lists_the_choices(kwargs: dict, message: str) -> None:
    with pytest.raises(PTQError, match=message):
        Cell(**kwargs)


@pytest.mark.parametrize("cell", [Cell("onnxruntime", "u8s8")], ids=lambda cell: cell.id)
def test_a_cells_tests_reach_the_scheduler_as_one_group(cell: Cell, request: pytest.FixtureRequest) -> None:
    """A test about a cell is in the cell's xdist group, and under ``--dist loadgroup`` (``pytest -n auto``) its id
    carries the ``@group`` suffix by which pytest-xdist keeps a group in one worker."""
    assert request.node.get_closest_marker("xdist_group").args == (cell.id,)
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith(f"@{cell.id}"), f"{request.node.nodeid}: {ungrouped.__doc__}"


def _item(nodeid: str, group: str | None) -> SimpleNamespace:
    mark = pytest.mark.xdist_group(group).mark if group else None
    return SimpleNamespace(nodeid=nodeid, get_closest_marker=lambda name: mark if name == "xdist_group" else None)


ITEMS = [_item("t.py::grouped@g", "g"), _item("t.py::lost", "g"), _item("t.py::free", None)]


def test_a_grouped_test_without_its_suffix_is_ungrouped() -> None:
    assert ungrouped(ITEMS) == ["t.py::lost"]  # type: ignore[arg-type]


@pytest.mark.parametrize("loadgroup", [True, False])
def test_an_ungrouped_run_under_loadgroup_is_reported(loadgroup: bool, recwarn: pytest.WarningsRecorder) -> None:
    session = SimpleNamespace(config=SimpleNamespace(option=SimpleNamespace(loadgroup=loadgroup)), items=ITEMS)
    pytest_collection_finish(session)  # type: ignore[arg-type]
    found = [str(w.message) for w in recwarn if issubclass(w.category, UngroupedWarning)]
    assert len(found) == loadgroup
    if loadgroup:
        assert "did not group 1 tests by their xdist_group mark" in found[0] and "t.py::lost" in found[0]
        assert "install pytest<9.2" in found[0]
