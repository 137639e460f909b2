"""Every cell of the matrix, ONNX Runtime and PT2E alike: one declaration, one set of properties.

``-k onnxruntime-u8s8`` selects a row; ``-k test_size_ratio`` a column.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptq_core.calibration import CalibrationConfig
from ptq_core.inspection import activation_scales, summarize
from ptq_core.matrix import (
    CELLS,
    MAX_ACCURACY_DROP_POINTS,
    MAX_CLASS_DROP_POINTS,
    MIN_FILE_RATIO,
    MIN_PAYLOAD_RATIO,
    Cell,
    pytest_params,
)
from ptq_core.report import DEFAULT_CELLS
from ptq_core.runtime import as_predictor

FP32_ACCURACY = 0.8719

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp32_of(fp32_onnx: Path, fp32_pt: Path):
    return {"onnxruntime": fp32_onnx, "pytorch": fp32_pt}.__getitem__


@pytest.fixture(scope="module")
def summary_of(fp32_of):
    """``summary_of(cell, artifact)``: what the artifact stores, read once per module and worker."""
    return functools.cache(lambda cell, artifact: summarize(artifact, fp32_of(cell.framework)))


@pytest.fixture(scope="module")
def predictor_of():
    return functools.cache(as_predictor)


@pytest.mark.parametrize("cell", pytest_params())
def test_loads(cell: Cell, artifact: Path, test_split) -> None:
    predict = as_predictor(artifact)  # a fresh InferenceSession / torch.export.load
    assert predict(test_split.images[:2]).shape == (2, 10)


@pytest.mark.parametrize("cell", pytest_params())
@pytest.mark.parametrize("batch", [1, 64])
def test_output_shape(cell: Cell, artifact: Path, test_split, batch: int, summary_of, predictor_of) -> None:
    probs = predictor_of(artifact)(test_split.images[:batch])
    assert probs.shape == (batch, 10)
    # ten probabilities, each rounded to the output's quantization step (if the softmax is quantized)
    step = summary_of(cell, artifact).output_step
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=10 * step / 2 + 1e-5)


@pytest.mark.parametrize("cell", pytest_params())
def test_calibration_stratified(cell: Cell, artifact: Path, calibration) -> None:
    key = json.loads(artifact.with_name(artifact.name + ".key.json").read_text())["key"]
    assert key["calibration"] == {"num_samples": 200, "seed": 42, "split": "test"}
    assert key["calibration_sha256"] == hashlib.sha256(calibration.images.tobytes()).hexdigest()
    assert calibration.config == CalibrationConfig()
    assert np.bincount(calibration.labels, minlength=10).tolist() == [20] * 10


@pytest.mark.parametrize("cell", pytest_params())
def test_weights_are_8bit(cell: Cell, artifact: Path, summary_of) -> None:
    summary = summary_of(cell, artifact)
    assert summary.weight_ops == 10, f"{cell.id}: expected 9 convs + 1 dense, found {summary.weight_ops}"
    assert summary.quantized_weight_ops == summary.weight_ops, (
        f"{cell.id}: only {summary.quantized_weight_ops} of {summary.weight_ops} Conv/Linear take 8-bit weights"
    )
    assert summary.activations_quantized, f"{cell.id}: some Conv/Linear input is not quantized"
    assert set(summary.weight_dtypes) <= {"int8", "uint8"} and summary.weight_dtypes


@pytest.mark.parametrize("cell", pytest_params())
def test_size_ratio(cell: Cell, artifact: Path, fp32_of, summary_of, record_property) -> None:
    fp32 = fp32_of(cell.framework)
    summary = summary_of(cell, artifact)
    file_ratio = fp32.stat().st_size / artifact.stat().st_size
    record_property("payload_ratio", round(summary.payload_ratio, 3))
    record_property("file_ratio", round(file_ratio, 3))
    assert summary.payload_ratio >= MIN_PAYLOAD_RATIO, (
        f"{cell.id}: weight payload {summary.payload_bytes} B is only {summary.payload_ratio:.2f}x smaller than "
        f"FP32's {summary.float_payload_bytes} B (need {MIN_PAYLOAD_RATIO}x)"
    )
    assert file_ratio >= MIN_FILE_RATIO[cell.framework], (
        f"{cell.id}: {artifact.name} is {artifact.stat().st_size} B, only {file_ratio:.2f}x smaller than "
        f"{fp32.name} (need {MIN_FILE_RATIO[cell.framework]}x)"
    )


@pytest.mark.parametrize("cell", pytest_params(expect_accuracy=True))
def test_accuracy_vs_fp32(cell: Cell, artifact: Path, evaluated, record_property) -> None:
    result = evaluated(artifact)
    drop = (FP32_ACCURACY - result.accuracy) * 100
    record_property("accuracy", result.accuracy)
    record_property("correct", result.correct)
    assert drop <= MAX_ACCURACY_DROP_POINTS, (
        f"{cell.id} scored {result.accuracy:.2%} ({result.correct}/10000), {drop:.2f} points below FP32 "
        f"{FP32_ACCURACY:.2%} (allowed {MAX_ACCURACY_DROP_POINTS})"
    )


@pytest.mark.parametrize("cell", pytest_params(expect_accuracy=True))
def test_no_class_collapses(cell: Cell, artifact: Path, evaluated, fp32_of) -> None:
    fp32 = evaluated(fp32_of(cell.framework)).per_class_accuracy
    quant = evaluated(artifact).per_class_accuracy
    drops = {c: round((f - q) * 100, 1) for c, (f, q) in enumerate(zip(fp32, quant, strict=True))}
    worst = max(drops, key=drops.__getitem__)
    assert drops[worst] <= MAX_CLASS_DROP_POINTS, (
        f"{cell.id}: class {worst} fell {drops[worst]} points below FP32 (allowed {MAX_CLASS_DROP_POINTS}); "
        f"all drops: {drops}"
    )


@pytest.mark.parametrize("cell", pytest_params(tuple(c for c in CELLS if c.calibrator != "minmax")))
def test_calibrator_changes_activation_ranges(cell: Cell, artifact: Path, quantized) -> None:
    """A calibrator that silently falls back to min/max (ORT's entropy with its default bins) is caught."""
    minmax = activation_scales(quantized(Cell(cell.framework, cell.dtype, "minmax", cell.granularity)))
    ours = activation_scales(artifact)
    assert ours.keys() == minmax.keys() and ours
    differ = [name for name in ours if not np.isclose(ours[name], minmax[name], rtol=1e-6)]
    assert differ, f"{cell.id}: every activation scale equals minmax's: the {cell.calibrator} calibrator did nothing"


@pytest.mark.parametrize(
    "cell", pytest_params(tuple(c for c in CELLS if c.framework == "pytorch" and c.dtype == "int8"))
)
def test_pytorch_int8_activations_predict_as_uint8(cell: Cell, artifact: Path, quantized, evaluated) -> None:
    """Asymmetric S8 is U8 with the zero point moved by 128: the same model, image for image (measured)."""
    twin = quantized(Cell("pytorch", "uint8", cell.calibrator, cell.granularity))
    assert np.array_equal(evaluated(artifact).predictions, evaluated(twin).predictions)


@pytest.mark.parametrize("cell", pytest_params((Cell("pytorch", "uint8"), Cell("onnxruntime", "u8s8"))))
def test_loads_standalone_in_a_fresh_process(cell: Cell, artifact: Path, test_split, tmp_path: Path) -> None:
    """No calibration state, no in-process registration: a new interpreter loads the file and agrees."""
    np.save(tmp_path / "x.npy", test_split.images[:64])
    script = (
        "import sys, numpy as np; from ptq_core.runtime import as_predictor; "
        "np.save(sys.argv[3], as_predictor(sys.argv[1])(np.load(sys.argv[2])))"
    )
    args = [str(artifact), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    subprocess.run([sys.executable, "-c", script, *args], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), as_predictor(artifact)(test_split.images[:64]))


@pytest.mark.parametrize("cell", pytest_params(DEFAULT_CELLS, expect_accuracy=True))
def test_train_split_calibration_within_3_points(cell: Cell, ws, evaluated) -> None:
    """Calibrated on training images only (no test-set leakage), the default cells still hold the bound."""
    result = evaluated(ws.quantized(cell, CalibrationConfig(split="train")))
    drop = (FP32_ACCURACY - result.accuracy) * 100
    assert drop <= MAX_ACCURACY_DROP_POINTS, f"{cell.id} calibrated on train: {result.accuracy:.2%}, -{drop:.2f} points"
