"""The matrix declaration: ids are test ids and baseline names, so they are pinned by a table."""

from __future__ import annotations

import pytest

from ptq_core.errors import PTQError
from ptq_core.matrix import CELLS, EXPECTED_FAILURES, Cell


@pytest.mark.parametrize(
    "cell, cell_id, artifact",
    [
        (Cell("onnxruntime", "u8s8"), "onnxruntime-u8s8-minmax-per_channel", "resnet8_u8s8.onnx"),
        (
            Cell("onnxruntime", "int8", "entropy", "per_tensor"),
            "onnxruntime-int8-entropy-per_tensor",
            "resnet8_int8_entropy_per_tensor.onnx",
        ),
        (Cell("pytorch", "uint8", "histogram"), "pytorch-uint8-histogram-per_channel", "resnet8_uint8_histogram.pt"),
        (
            Cell("pytorch", "int8", granularity="per_tensor"),
            "pytorch-int8-minmax-per_tensor",
            "resnet8_int8_per_tensor.pt",
        ),
    ],
)
def test_cell_id_and_artifact_name(cell: Cell, cell_id: str, artifact: str) -> None:
    assert cell.id == cell_id
    assert cell.artifact_name == artifact


def test_cells_are_unique_and_complete() -> None:
    ids = [c.id for c in CELLS]
    assert len(ids) == len(set(ids)) == 3 * 4 * 2 + 2 * 4 * 2


def test_expected_failures_name_real_cells() -> None:
    assert set(EXPECTED_FAILURES) <= {c.id for c in CELLS}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"framework": "tflite", "dtype": "int8"}, r"unknown framework 'tflite': choose one of onnxruntime, pytorch"),
        ({"framework": "pytorch", "dtype": "u8s8"}, r"unknown pytorch dtype 'u8s8': choose one of uint8, int8"),
        ({"framework": "onnxruntime", "dtype": "int8", "calibrator": "histogram"}, r"calibrator 'histogram'"),
        ({"framework": "onnxruntime", "dtype": "int8", "granularity": "per_row"}, r"granularity 'per_row'"),
    ],
)
def test_unknown_option_lists_the_choices(kwargs: dict, message: str) -> None:
    with pytest.raises(PTQError, match=message):
        Cell(**kwargs)
