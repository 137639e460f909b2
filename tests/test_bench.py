"""The deployment benchmark's pieces that do not need a quiet machine: the uint8-input rewrite, the peak
formula, what counts as the fastest honest deployment, and that a deployment is scored as it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptq_core import bench, bench_ort, cpu_peak
from ptq_core.formats.onnx import uint8_input
from ptq_core.matrix import Cell
from ptq_core.runtimes import as_predictor


@pytest.mark.slow
def test_uint8_input_rewrite_predicts_exactly_as_the_qdq_model(quantized, test_split, tmp_path: Path) -> None:
    qdq = quantized(Cell("onnxruntime", "u8s8"))
    uint8_input(qdq, tmp_path / "u8.onnx")
    session = bench_ort.session(tmp_path / "u8.onnx", 1, spinning=False)
    images = test_split.images[:2000]
    assert images.dtype == np.uint8
    raw = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.array_equal(raw, as_predictor(qdq)(images))  # bit for bit: Q(x) = x for pixels with scale 1, zp 0


def test_uint8_input_rewrite_refuses_an_inexact_input_quantizer(quantized, tmp_path: Path) -> None:
    qdq = quantized(Cell("onnxruntime", "int8"))  # int8 activations: zero point and dtype are not uint8 pixels
    with pytest.raises(ValueError, match="not exact on uint8 pixels"):
        uint8_input(qdq, tmp_path / "u8.onnx")
    assert not (tmp_path / "u8.onnx").exists()


def test_peak_is_macs_per_instruction_times_rate_times_clock() -> None:
    peak = cpu_peak.Peak(macs_per_instruction=64, instructions_per_cycle=2, ghz=4.0, measured_rate=1.97)
    assert peak.gmacs_per_core == 512
    assert "64 MACs per VPDPBUSD zmm x 2 per cycle (measured 1.97) x 4.00 GHz" in peak.formula


def test_no_peak_without_vnni(monkeypatch) -> None:
    monkeypatch.setattr(cpu_peak, "cpu_flags", lambda: ["avx2", "fma"])
    assert cpu_peak.measure() is None


def test_the_fastest_deployment_is_the_fastest_honest_one() -> None:
    rows = [
        {"batch": 256, "threads": 1, "model": "a", "runtime": "x", "vs_ort_fp32": 3.5, "honest": False},
        {"batch": 256, "threads": 1, "model": "b", "runtime": "x", "vs_ort_fp32": 2.0, "honest": True},
        {"batch": 256, "threads": 1, "model": "c", "runtime": "y", "vs_ort_fp32": 2.5, "honest": True},
        {"batch": 1, "threads": 1, "model": "fp32", "runtime": "x", "vs_ort_fp32": 1.0, "honest": False},
    ]
    assert {k: r["model"] for k, r in bench.fastest(rows).items()} == {"b256-t1": "c"}


@pytest.mark.slow
def test_a_deployment_is_scored_as_it_runs(ws, quantized, evaluated) -> None:
    cell = Cell("onnxruntime", "u8s8")
    path = quantized(cell)
    d = bench.Deployment("onnxruntime", cell.id, path, cell.model_spec)
    images = ws.split("test").images[:2048]  # 8 batches of 256: the property is per image, not per test split
    assert np.array_equal(bench.predictions(d, images), evaluated(path, "onnxruntime").predictions[:2048])


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "openvino_default"])
@pytest.mark.parametrize("batch", [1, 256])
def test_openvino_from_its_bound_input_predicts_as_the_scoring_runtime(ws, evaluated, runtime, batch) -> None:
    cell = Cell("nncf")
    path = ws.quantized(cell)
    images = ws.split("test").images[:600]  # 256-image batches: two full ones and a padded one
    d = bench.Deployment(runtime, cell.id, path, cell.model_spec)
    got = bench.predictions(d, images, threads=1, batch=batch)
    assert np.array_equal(got, evaluated(path, runtime).predictions[:600])


@pytest.mark.slow
def test_the_uint8_input_deployment_takes_pixels_and_predicts_as_its_cell(ws, evaluated) -> None:
    d = next(d for d in bench.deployments(ws) if d.runtime == "onnxruntime_uint8_input")
    cell = Cell("onnxruntime", "u8s8")
    assert d.model == cell.id and d.fp32_twin == ("onnxruntime", "fp32")
    test = ws.split("test")
    assert d.inputs(test.images[:4]).dtype == np.uint8  # timed on the pixels as they come
    images = test.images[:2048]
    assert np.array_equal(bench.predictions(d, images), evaluated(ws.quantized(cell), "onnxruntime").predictions[:2048])
