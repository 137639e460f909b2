"""Per-tensor SQNR of the default ONNX Runtime cell against the FP32 model, on 256 real test images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from ptq_core.errors import PTQError
from ptq_core.matrix import Cell
from ptq_core.sqnr import TensorSQNR, activation_sqnr, format_table

CELL = Cell("onnxruntime", "u8s8", "minmax", "per_channel")
N_IMAGES = 256
EPS = np.finfo(float).eps  # qdq_loss_debug floors both norms at this: identical tensors give 20 log10(|x| / eps)
pytestmark = pytest.mark.xdist_group("sqnr")  # one worker computes `rows` (2.7 s) for all of them


@pytest.fixture(scope="module")
def images(test_split) -> np.ndarray:
    return test_split.images[:N_IMAGES]


@pytest.fixture(scope="module")
def qdq(quantized) -> Path:
    return quantized(CELL)


@pytest.fixture(scope="module")
def rows(fp32_onnx: Path, qdq: Path, images: np.ndarray) -> list[TensorSQNR]:
    return activation_sqnr(fp32_onnx, qdq, images)


def _by_name(rows: list[TensorSQNR]) -> dict[str, TensorSQNR]:
    return {r.tensor: r for r in rows}


def _quantized_conv_outputs(qdq: Path) -> list[str]:
    """Conv outputs of the QDQ graph that a QuantizeLinear consumes (a fused ReLU's output keeps the ReLU's name)."""
    graph = onnx.load(str(qdq)).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    convs = [n.output[0] for n in graph.node if n.op_type == "Conv"]
    assert convs and set(convs) <= quantized, "every Conv output of the QDQ model should be quantized"
    return convs


def test_every_quantized_conv_output_has_a_finite_sqnr(rows: list[TensorSQNR], qdq: Path) -> None:
    found = _by_name(rows)
    convs = _quantized_conv_outputs(qdq)
    assert len(convs) == 9  # ResNet8: 7 3x3 convs + 2 1x1 shortcuts
    assert set(convs) <= set(found), f"no SQNR for {sorted(set(convs) - set(found))}"
    assert all(math.isfinite(found[name].sqnr_db) for name in convs)


def test_sqnr_is_plausible_for_8_bits(rows: list[TensorSQNR], qdq: Path) -> None:
    # above 10 dB: no layer is broken; below 60 dB: an 8-bit step of error is really there (ideal full-scale
    # uniform 8-bit quantization gives 6.02 * 8 + 1.76 = 50 dB, before any error carried in from earlier layers)
    found = _by_name(rows)
    convs = {name: round(found[name].sqnr_db, 1) for name in _quantized_conv_outputs(qdq)}
    assert all(10 < db < 60 for db in convs.values()), convs
    assert all(10 < r.sqnr_db < 60 for r in rows if r.tensor != "permute"), format_table(rows)


def test_identical_tensors_get_the_modules_identity_sqnr(rows: list[TensorSQNR], qdq: Path, images: np.ndarray) -> None:
    # Both models see the same pixels, and the QDQ model quantizes the (transposed) input with scale 1 and
    # zero point 0, so its dequantized copy of the integer pixels is exact: FP32 vs FP32 in effect.
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(qdq)).graph.initializer}
    assert float(inits["permute_scale"]) == 1.0 and int(inits["permute_zero_point"]) == 0
    first = rows[0]
    assert (first.tensor, first.op_type) == ("permute", "Transpose")
    expected = 20 * math.log10(float(np.linalg.norm(images.astype(np.float64).ravel())) / EPS)
    assert first.sqnr_db == pytest.approx(expected, rel=1e-6)
    assert first.sqnr_db > 300


def test_output_sqnr_matches_an_independent_run(
    rows: list[TensorSQNR], fp32_onnx: Path, qdq: Path, images: np.ndarray
) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as qdq_loss_debug runs
    x = {"input": images.astype(np.float32)}
    fp32, q = (
        ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]).run(None, x)[0]
        for p in (fp32_onnx, qdq)
    )
    expected = 20 * math.log10(np.linalg.norm(fp32.astype(np.float64)) / np.linalg.norm((fp32 - q).astype(np.float64)))
    last = rows[-1]
    assert (last.tensor, last.op_type) == ("probs", "Softmax")
    assert last.sqnr_db == pytest.approx(expected, abs=1e-3)


def test_rows_follow_the_fp32_graph(rows: list[TensorSQNR], fp32_onnx: Path) -> None:
    order = {out: (i, n.op_type) for i, n in enumerate(onnx.load(str(fp32_onnx)).graph.node) for out in n.output}
    assert all(r.tensor in order and r.op_type == order[r.tensor][1] for r in rows)
    assert [order[r.tensor][0] for r in rows] == sorted(order[r.tensor][0] for r in rows)
    assert len({r.tensor for r in rows}) == len(rows)


def test_table_names_the_worst_tensor(rows: list[TensorSQNR]) -> None:
    table = format_table(rows)
    worst = min(rows, key=lambda r: r.sqnr_db)
    marked = [line for line in table.splitlines() if "worst" in line and "|---" not in line]
    assert len(marked) == 1 and f"| {worst.tensor} " in marked[0] and f"{worst.sqnr_db:.2f}" in marked[0]
    assert all(f"| {r.tensor} " in table for r in rows)
    assert len(table.splitlines()) == len(rows) + 2


def test_fp32_model_as_the_quantized_one_is_refused(fp32_onnx: Path, images: np.ndarray) -> None:
    with pytest.raises(PTQError, match="no QuantizeLinear/DequantizeLinear activation pairs"):
        activation_sqnr(fp32_onnx, fp32_onnx, images[:8])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((4, 3, 32, 32), np.uint8), r"images must be \(N, 32, 32, 3\) as .*'s input 'input' takes them"),
        (np.zeros((0, 32, 32, 3), np.uint8), r"images must be \(N, 32, 32, 3\)"),
        (np.full((2, 32, 32, 3), np.nan, np.float32), r"images must be finite"),
    ],
)
def test_bad_images_are_named(fp32_onnx: Path, qdq: Path, bad: np.ndarray, message: str) -> None:
    with pytest.raises(PTQError, match=message):
        activation_sqnr(fp32_onnx, qdq, bad)


def test_missing_or_corrupt_model_is_named(tmp_path: Path, fp32_onnx: Path, qdq: Path, images: np.ndarray) -> None:
    with pytest.raises(PTQError, match="QDQ ONNX model .*missing.onnx not found"):
        activation_sqnr(fp32_onnx, tmp_path / "missing.onnx", images[:2])
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\xffnot a model" * 8)
    with pytest.raises(PTQError, match="cannot run ONNX model .*corrupt.onnx"):
        activation_sqnr(fp32_onnx, corrupt, images[:2])


def test_empty_table_is_refused() -> None:
    with pytest.raises(PTQError, match="no SQNR rows"):
        format_table([])
