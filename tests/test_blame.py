"""Layer blame: a layer spoiled on purpose in a real QDQ model is the one blamed, a layer left in float computes
what FP32 computes, and what cannot be blamed is refused with the reason. The ONNX blames are read through the
cache the reports use (``blame_report.cached``: keyed by the artifact's bytes, the code and the versions), so a
warm run measures again only what changed."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from ptq_core import blame_onnx, blame_pt2e, cli
from ptq_core.backends import pytorch as pytorch_backend
from ptq_core.blame import Blame, LayerBlame, blame, format_table
from ptq_core.blame_onnx import layer_in_float, preprocess
from ptq_core.blame_report import cached
from ptq_core.errors import PTQError
from ptq_core.matrix import Cell

CELL = Cell("onnxruntime", "u8s8", "minmax", "per_channel")
FIRST_CONV = "node_Conv_53"  # ResNet8's stem conv: its input is the exactly quantized pixels (scale 1, zero point 0)
SPOILED = "node_Conv_61"  # stack2.conv1, mid-network, with a ReLU the quantizer folded into its output quantization
SCALE_FACTOR = 50.0  # 50x the output step: 255 levels over 50x the calibrated range, most outputs round to zero
WEIGHT_STEP = 32  # int8 weights rounded to multiples of 32: 3 bits (-128..96) of the 8


def _layer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    return next(n for n in graph.node if n.name == name)


def _scale_output(model: onnx.ModelProto, layer: str) -> None:
    """The layer's output QuantizeLinear/DequantizeLinear pair with a step SCALE_FACTOR times coarser."""
    graph = model.graph
    out = _layer(graph, layer).output[0]
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == out)
    dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    scale = next(numpy_helper.to_array(t) for t in graph.initializer if t.name == q.input[1])
    graph.initializer.append(numpy_helper.from_array((scale * SCALE_FACTOR).astype(scale.dtype), "spoiled_scale"))
    old, q.input[1], dq.input[1] = q.input[1], "spoiled_scale", "spoiled_scale"
    if not any(old in n.input for n in graph.node):
        graph.initializer.remove(next(t for t in graph.initializer if t.name == old))


def _round_weights(model: onnx.ModelProto, layer: str) -> None:
    """The layer's int8 weights rounded to 3 bits."""
    graph = model.graph
    dq = next(n for n in graph.node if n.output[0] == _layer(graph, layer).input[1])
    stored = next(t for t in graph.initializer if t.name == dq.input[0])
    coarse = np.clip(np.round(numpy_helper.to_array(stored) / WEIGHT_STEP) * WEIGHT_STEP, -128, 127)
    stored.CopyFrom(numpy_helper.from_array(coarse.astype(np.int8), stored.name))


def _spoiled(artifact: Path, folder: Path, spoil: Callable[[onnx.ModelProto, str], None]) -> Path:
    model = onnx.load(str(artifact))
    spoil(model, SPOILED)
    out = folder / f"{artifact.stem}-{spoil.__name__.strip('_')}-{SPOILED}.onnx"
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def artifact(quantized) -> Path:  # type: ignore[no-untyped-def]
    return quantized(CELL)  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spoil", "diagnosis"),
    [
        (_scale_output, "the calibrator's range reaches"),  # 50x the calibrated range: far above FP32's maximum
        (_round_weights, "its weight SQNR is"),  # the lowest weight SQNR of the layers
    ],
    ids=["output_scale", "weights_3bit"],
)
def test_blame_finds_the_spoiled_layer(ws, artifact: Path, tmp_path: Path, spoil, diagnosis: str) -> None:  # type: ignore[no-untyped-def]
    found = Blame.from_json(cached(ws, CELL, artifact=_spoiled(artifact, tmp_path, spoil), confirmed=1))
    top = found.layers[0]
    assert top.layer == SPOILED, format_table(found)
    # the cell itself is 0.45 points below FP32 (2.74 on the AVX2-only CPU), the spoiled layer's share the rest: with it
    # in float the artifact is the cell again but for that one layer, so it regains well over half the drop
    assert found.drop_points > 3.0 and top.regained_points is not None
    assert top.regained_points > found.drop_points / 2, format_table(found)
    assert top.regained_images > max(r.regained_images for r in found.layers[1:])
    assert f"leaving `{SPOILED}` in float regains" in found.headline()
    assert "its output quantization alone has" in found.headline() and diagnosis in found.headline(), found.headline()
    if spoil is _scale_output:  # its own output quantization is the worst of the layers'
        assert top.local_sqnr_db == min(r.local_sqnr_db for r in found.layers if r.local_sqnr_db is not None)


def test_the_unspoiled_cell_blames_another_layer_first(ws, artifact: Path) -> None:  # type: ignore[no-untyped-def]
    # the twin of the test above: without the spoil, the ranking's top is not the layer spoiled there
    found = Blame.from_json(cached(ws, CELL, artifact=artifact, confirmed=0))
    assert found.layers[0].layer != SPOILED, format_table(found)
    assert all(r.regained_points is None for r in found.layers)
    assert json.loads(json.dumps(found.as_json()))["layers"][0]["layer"] == found.layers[0].layer


def _tensor(model: Path, tensor: str, images: np.ndarray, folder: Path) -> np.ndarray:
    proto = onnx.load(str(model))
    proto.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    path = folder / f"{model.stem}-{tensor}.onnx"
    onnx.save(proto, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([tensor], {"input": images.astype(np.float32)})[0])


def test_a_layer_left_in_float_computes_what_fp32_computes(ws, artifact: Path, tmp_path: Path, test_split) -> None:  # type: ignore[no-untyped-def]
    pre = tmp_path / "fp32_pre.onnx"
    preprocess(ws.fp32("onnx"), pre)
    variant = tmp_path / "first_conv_in_float.onnx"
    layer_in_float(artifact, pre, FIRST_CONV, variant)
    images = test_split.images[:64]
    fp32, quantized, in_float = (_tensor(m, "relu", images, tmp_path) for m in (pre, artifact, variant))
    # the stem conv sees the pixels exactly in both models, so in float its ReLU output is FP32's (float32
    # rounding: 1e-4 of a range of ~10); quantized, it is 8 bits away (a step is range / 255, ~0.04)
    np.testing.assert_allclose(in_float, fp32, atol=1e-4)
    assert np.abs(quantized - fp32).max() > 1e-2
    assert in_float.min() == 0.0  # the ReLU the quantizer folded into the output quantization is back


def test_a_backend_without_mixed_precision_is_refused(ws) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PTQError, match="backend nncf declares no mixed precision"):
        blame(ws, Cell("nncf"))


@pytest.mark.parametrize("runtime", ["tensorrt", "torch"])
def test_a_runtime_that_does_not_score_the_cell_is_refused(ws, runtime: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PTQError, match=f"runtime '{runtime}' does not score .*choose one of onnxruntime, openvino"):
        blame(ws, CELL, runtime)


def test_a_cell_that_does_not_drop_is_refused(ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    as_cell = tmp_path / "fp32-as-the-cell.onnx"
    shutil.copyfile(ws.fp32("onnx"), as_cell)
    with pytest.raises(PTQError, match="does not drop, so there is nothing to blame"):
        blame(ws, CELL, artifact=as_cell)


def test_an_artifact_for_a_rebuilt_backend_is_refused(ws, artifact: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PTQError, match="left in float by rebuilding the cell, so pass no artifact"):
        blame(ws, Cell("pytorch", "uint8"), artifact=artifact)


def test_explain_writes_the_table_and_the_json(ws, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "blame.json"
    argv = ["explain", CELL.id, "--confirm", "1", "--out", str(out), "--models-dir", str(ws.models_dir)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    written = json.loads(out.read_text())
    assert written["cell"] == CELL.id and printed.out.startswith(written["headline"])
    assert f"| 1 | {written['layers'][0]['layer']} |" in printed.out
    assert "in float, on" in printed.err or f"{CELL.id} on onnxruntime: the blame measured before" in printed.err


def test_explain_refuses_an_unknown_cell(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", "resnet8-onnxruntime-u8s8-minmax"])
    assert exit_.value.code == 2
    assert "no cell resnet8-onnxruntime-u8s8-minmax: cells are named like" in capsys.readouterr().err


def _record(top: LayerBlame) -> Blame:
    first = LayerBlame("first", 0, 10, 0.05, "a", 30.0, 30.0, 40.0, (0.0, 5.0), (0.0, 5.0))
    return Blame("cell", "onnxruntime", "a.onnx", 10_000, 8719, 8619, 400, (top, first))


@pytest.mark.parametrize(
    ("calibrated", "reached", "said"),
    [
        ((0.0, 2.0), (0.0, 7.0), "the calibrator clipped its range at 2.00 where FP32 reaches 7.00"),
        ((0.0, 15.0), (0.0, 7.0), "the calibrator's range reaches 15.00 where FP32 reaches only 7.00"),
        ((-9.0, 9.0), (0.0, 7.0), "its range goes down to -9.00 where FP32's output is never negative"),
    ],
)
def test_headline_names_what_stands_out(calibrated, reached, said: str) -> None:  # type: ignore[no-untyped-def]
    record = _record(LayerBlame("top", 1, 90, 0.6, "t", 9.0, 12.0, 20.0, calibrated, reached))
    line = record.headline()
    assert line.startswith("cell is 1.00 points below FP32 on onnxruntime; leaving `top` in float regains 0.60 (60%")
    assert "its output quantization alone has 12.0 dB SQNR, the other layers' 30.0 dB" in line
    assert "its weight SQNR is 20.0 dB, the others' at least 40.0 dB" in line
    assert said in line and line.count("range") == 1, line


def test_headline_is_quiet_where_nothing_stands_out() -> None:
    # within what FP32 reaches and under twice it: no range clause; weights as good as the others': no weight clause
    line = _record(LayerBlame("top", 1, 90, 0.6, "t", 12.0, 12.0, 45.0, (0.0, 9.0), (0.0, 7.0))).headline()
    assert "range" not in line and "weight" not in line, line


def test_a_top_layer_whose_measurements_do_not_stand_out_is_said_to_lose_elsewhere() -> None:
    # its own quantization (35 dB) above the other layer's (30 dB), weights as good, range within FP32's and not wide
    line = _record(LayerBlame("top", 1, 90, 0.6, "t", 20.0, 35.0, 45.0, (0.0, 7.0), (0.0, 7.0))).headline()
    assert line.endswith(
        "none of its SQNR or ranges stands out: what it loses is in how the runtime computes it "
        "(an integer sum that saturates), or in how much the layers after it amplify its error"
    ), line
    for stands_out in (
        LayerBlame("top", 1, 90, 0.6, "t", 20.0, 25.0, 45.0, (0.0, 7.0), (0.0, 7.0)),  # the lowest own SQNR
        LayerBlame("top", 1, 90, 0.6, "t", 20.0, 35.0, 20.0, (0.0, 7.0), (0.0, 7.0)),  # the lowest weight SQNR
        LayerBlame("top", 1, 90, 0.6, "t", 20.0, 35.0, 45.0, (0.0, 5.0), (0.0, 7.0)),  # a clipped range
    ):
        assert "stands out" not in _record(stands_out).headline()


def test_a_float_output_is_said_not_given_numbers() -> None:
    record = _record(LayerBlame("top", 1, 90, 0.6, weight_sqnr_db=41.0))
    said = "leaving `top` in float regains 0.60 (60% of the drop); its output is not quantized"
    assert record.headline().endswith(said)
    row = "| 1 | top | +90 | +0.60 | float output | float output | 41.0 | float output | float output |"
    assert row in format_table(record)


PT2E_CELL = Cell("pytorch", "uint8")
PT2E_SPOILED = "stack2.conv1.1"  # the module the ONNX test's node_Conv_61 was exported from
THREE_BITS = (-4, 3)


def _three_bit_weights_for(layer: str, build_quantizer):  # type: ignore[no-untyped-def]
    """``build_quantizer`` with ``layer``'s weights quantized to 3 bits, but when it is left in float."""

    def spoiled(cell, float_layers=()):  # type: ignore[no-untyped-def]
        quantizer = build_quantizer(cell, float_layers)
        if layer not in float_layers:
            config = quantizer.global_config
            weight = dataclasses.replace(config.weight, quant_min=THREE_BITS[0], quant_max=THREE_BITS[1])
            quantizer.set_module_name_qconfig(layer, dataclasses.replace(config, weight=weight))
        return quantizer

    return spoiled


@pytest.mark.e2e  # 11 PT2E builds, FP32 and 2 artifacts scored on the test split in eager torch: 150 s measured
def test_blame_finds_the_spoiled_layer_of_a_pt2e_cell(ws, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # the spoil is in the build, so the cell and every rebuild with one other layer in float carry it; a models
    # folder of its own keeps the spoiled builds out of the suite's cache (their keys do not see the patch)
    monkeypatch.setattr(
        pytorch_backend, "build_quantizer", _three_bit_weights_for(PT2E_SPOILED, pytorch_backend.build_quantizer)
    )
    found = blame(dataclasses.replace(ws, models_dir=tmp_path / "models"), PT2E_CELL, confirmed=1)
    top = found.layers[0]
    assert top.layer == PT2E_SPOILED, format_table(found)
    assert found.drop_points > 3.0 and top.regained_points is not None
    assert top.regained_points > found.drop_points / 2, format_table(found)
    assert "its weight SQNR is" in found.headline(), found.headline()


def test_torchaos_debugger_measures_each_pt2e_layer_where_its_output_is_quantized(ws, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(
        pytorch_backend, "build_quantizer", _three_bit_weights_for(PT2E_SPOILED, pytorch_backend.build_quantizer)
    )
    inputs = ws.build_inputs(PT2E_CELL)[0]
    layers = list(pytorch_backend.weight_layers(inputs))
    facts = blame_pt2e.layer_facts(inputs, PT2E_CELL, layers, ws.split("test").images[:64])
    assert list(facts) == layers
    # the batch norms are folded into the convs: each conv is compared after the ReLU (or residual add) fused into
    # its output quantization, which FP32 computes too; fc's output, the scores, stays float
    assert facts["conv"].output_node == "relu" and facts["stack1.conv2"].output_node == "relu_2"
    assert facts["fc"].output_node is None and facts["fc"].calibrated_range is None
    spoiled = facts.pop(PT2E_SPOILED)
    assert spoiled.weight_sqnr_db < 20 < 30 < min(f.weight_sqnr_db for f in facts.values()), facts
    for name, f in facts.items():
        if f.output_node is None:
            continue
        assert f.calibrated_range is not None and f.float_range is not None
        assert f.output_sqnr_db is not None and f.local_sqnr_db is not None
        assert 0 < f.output_sqnr_db < f.local_sqnr_db, (name, f)  # end to end carries every earlier layer's error
        if f.output_node.startswith("relu"):
            assert f.calibrated_range[0] == 0.0 and f.float_range[0] >= 0.0, (name, f)


def _conv_then(op: str) -> onnx.GraphProto:
    """A one-conv graph whose output passes through ``op`` before it reaches the quantized tensor ``y``."""
    conv = helper.make_node("Conv", ["x", "w"], ["c_out"], name="c")
    after = helper.make_node(op, ["c_out"], ["y"], name="after")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 3, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    return helper.make_graph([conv, after], "g", [x], [y], [w])


def test_only_a_folded_relu_is_put_back() -> None:
    assert [n.op_type for n in blame_onnx._clamps_after(_conv_then("Relu"), "c", "y")] == ["Relu"]
    with pytest.raises(PTQError, match="cannot leave c in float: .* the FP32 graph has Sigmoid, which only Relu"):
        blame_onnx._clamps_after(_conv_then("Sigmoid"), "c", "y")


def test_explain_refuses_a_negative_confirm_count(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", CELL.id, "--confirm", "-1"])
    assert exit_.value.code == 2 and "--confirm -1: give how many top layers" in capsys.readouterr().err
