"""The runtime registry is the one list of what runs an artifact: the runtimes that only deploy are never scored,
``ptq bench`` deploys what the registry says, and a runtime registered for one test is deployed and timed by ``ptq
bench``, searched by ``ptq tune`` and speed-guarded with no other edit (the tools' bookkeeping on a few images and
rounds)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ptq_core import adapters, bench, cli, speed, tune
from ptq_core.checks import CHECKS, subjects
from ptq_core.matrix import CELLS, Cell
from ptq_core.runtimes import RUNTIMES, Runtime, runtimes_for
from ptq_core.speed import Guard, guards, measure_guard
from tests.test_failures_are_results import USER_CELLS, FirstImages, tiny_classifier, tiny_data

AGAIN = "onnxruntime_again"  # ONNX Runtime under another name, deployed only


@pytest.fixture
def again(monkeypatch) -> str:
    runtime = Runtime(AGAIN, "onnx", ("onnxruntime",), RUNTIMES["onnxruntime"].load, scored=False)
    monkeypatch.setitem(RUNTIMES, AGAIN, runtime)
    return AGAIN


def test_the_runtimes_that_only_deploy_are_never_scored() -> None:
    deployed_only = {r.name for r in RUNTIMES.values() if not r.scored}
    assert deployed_only == {"openvino_throughput", "onnxruntime_uint8_input", "inductor"}
    assert not deployed_only & {r.name for r in runtimes_for()}
    assert not deployed_only & {rt.name for cell in CELLS for rt in cell.runtimes}
    assert not deployed_only & {s.runtime for check in CHECKS for s in subjects(check)}


def test_bench_deploys_fp32_and_each_default_cell_on_every_runtime_that_takes_it(monkeypatch) -> None:
    store = SimpleNamespace(fp32=lambda fmt, model: Path(f"{model}.{fmt}"), quantized=lambda c: Path(c.artifact_name))
    monkeypatch.setattr(adapters, "uint8_input_model", lambda ws, cell: Path(f"{cell.id}-uint8-input.onnx"))
    onnx = ("onnxruntime", "openvino", "openvino_default", "openvino_throughput")
    ort, nncf, pytorch = (Cell(b).id for b in ("onnxruntime", "nncf", "pytorch"))
    assert [(d.runtime, d.model, d.path.name) for d in bench.deployments(store)] == [
        *((rt, "fp32", "resnet8.onnx") for rt in onnx),
        ("inductor", "fp32", "resnet8.pt2"),
        *((rt, ort, f"{ort}.onnx") for rt in onnx),
        ("onnxruntime_uint8_input", ort, f"{ort}-uint8-input.onnx"),
        ("inductor", pytorch, f"{pytorch}.pt2"),
        *((rt, nncf, f"{nncf}.onnx") for rt in onnx),
    ]


@pytest.mark.slow
def test_a_registered_runtime_is_deployed_and_timed_by_ptq_bench(again, ws, monkeypatch) -> None:
    deps = bench.deployments(ws)
    assert [d.model for d in deps if d.runtime == again] == ["fp32", Cell("onnxruntime").id, Cell("nncf").id]
    # timed beside ONNX Runtime alone: what the other runtimes would add is their cost, not the registry's
    timed = [d for d in deps if d.runtime in ("onnxruntime", again)]
    monkeypatch.setattr(bench, "deployments", lambda ws, model: timed)
    monkeypatch.setattr(bench, "macs_of", lambda ws, model: 12_500_000)  # ResNet8's; counting it builds torch's
    monkeypatch.setattr(speed, "SEGMENT_S", 0.01)
    measured = bench.measure(FirstImages(ws, 256), batches=(64,), threads=(1,), rounds=2, say=lambda line: None)
    rows = {(r["runtime"], r["model"]): r for r in measured["rows"]}
    for d in timed:
        if d.runtime == again:
            mine, ort = rows[(again, d.model)], rows[("onnxruntime", d.model)]
            assert mine["outcome"] == "scored" and mine["images_per_s"] > 0 and mine["vs_ort_fp32"] is not None
            assert mine["accuracy"] == ort["accuracy"]  # the same library on the same file


@pytest.mark.slow
def test_a_registered_runtime_is_searched_by_ptq_tune(again, ws, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tune, "SPEED_ROUNDS", 2)  # the bookkeeping is under test, not the timing
    monkeypatch.setattr(speed, "SEGMENT_S", 0.01)
    monkeypatch.setattr(tune, "HEAD_TO_HEAD_ROUNDS", 2)
    out, calibration = tmp_path / "tuned", tiny_data(tmp_path / "calibration.npz", n=600)
    args = ["tune", "--onnx", tiny_classifier(tmp_path / "tiny.onnx"), "--data", tiny_data(tmp_path / "data.npz"),
            "--calibration", calibration, "--cache", ws.models_dir / "fault-injection", "--max-drop", "3",
            "--cells", USER_CELLS[0], "--out", out]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0
    result = json.loads((out / "tune.json").read_text())
    on = {r["runtime"]: r for r in result["candidates"]}
    assert set(on) == {"onnxruntime", "openvino", again}
    assert on[again]["candidate"] == f"tiny-{USER_CELLS[0]} on {again}" and on[again]["vs_ort_fp32"] is not None
    assert on[again]["validation_accuracy"] == on["onnxruntime"]["validation_accuracy"]
    assert result["fp32_validation_accuracy"][again] == result["fp32_validation_accuracy"]["onnxruntime"]


def test_a_registered_runtime_is_speed_guarded_as_deployed(monkeypatch, tmp_path) -> None:
    """On a runtime that only deploys, where the FP32 file takes 4 ms a batch and the 8-bit one 1 ms: ~4x."""

    def deploy(path: Path, threads: int, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
        seconds = 0.004 if path.name == "fp32.onnx" else 0.001

        def run(images: np.ndarray) -> np.ndarray:
            time.sleep(seconds)
            return np.zeros((len(images), 10), np.float32)

        return run

    monkeypatch.setitem(RUNTIMES, "timed", Runtime("timed", "onnx", (), scored=False, deploy=deploy))
    assert {g.id for g in guards() if g.runtime == "timed"} == {
        f"{Cell(b).id}-on-timed-b{batch}" for b in ("onnxruntime", "nncf") for batch in (1, 256)
    }
    ratio = measure_guard(tmp_path / "fp32.onnx", tmp_path / "8bit.onnx", Guard(Cell("onnxruntime"), "timed", 1),
                          np.zeros((1, 32, 32, 3), np.uint8), rounds=3)  # fmt: skip
    assert 2 < ratio < 8
