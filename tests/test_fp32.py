"""The FP32 ResNet8 as ONNX and as a torch.export archive: the MLPerf Tiny model, exactly."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from ptq_core.errors import PTQError
from ptq_core.eval import predict_scores
from ptq_core.models import get_model
from ptq_core.runtimes import as_predictor

RESNET8 = get_model("resnet8")


@pytest.fixture(scope="module", params=["onnx", "pt2"])
def fp32_model(request, fp32_onnx, fp32_pt2):
    return fp32_onnx if request.param == "onnx" else fp32_pt2


def test_fp32_scores_exactly_8719(fp32_model, evaluated) -> None:
    """The one place the reference accuracy is pinned: MLPerf Tiny ResNet8, 87.19 % on the 10,000 test images."""
    result = evaluated(fp32_model)
    assert RESNET8.reference_correct == 8719
    assert result.correct == RESNET8.reference_correct, f"{fp32_model.name}: {result.correct}/10000, expected 8719"


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_mobilenet_fp32_scores_exactly_8614(fmt: str, ws, evaluated) -> None:
    """MobileNetV1 as trained by ptq_core/train_mobilenet.py (seed 0, 15 epochs): 86.14 %, on both formats."""
    mobilenet = get_model("mobilenetv1")
    result = evaluated(ws.fp32(fmt, "mobilenetv1"))
    assert mobilenet.reference_correct == 8614
    assert result.correct == mobilenet.reference_correct, f"mobilenetv1 {fmt}: {result.correct}/10000, expected 8614"


def test_onnx_and_pytorch_agree_on_every_image(fp32_onnx, fp32_pt2, test_split, evaluated) -> None:
    assert np.array_equal(evaluated(fp32_onnx).predictions, evaluated(fp32_pt2).predictions)
    # scores too, on every 10th image (all 10,000 take 3 s; the largest gap measured on them is below 1e-5)
    p_onnx, p_pt = (predict_scores(path, test_split.images[::10]) for path in (fp32_onnx, fp32_pt2))
    assert np.abs(p_onnx - p_pt).max() <= 1e-4


@pytest.mark.parametrize("batch", [1, 64])
def test_output_is_probabilities_of_shape_batch_by_10(fp32_model, test_split, batch: int) -> None:
    probs = as_predictor(fp32_model)(test_split.images[:batch])
    assert probs.shape == (batch, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_graph_is_clean_and_static(fp32_onnx) -> None:
    model = onnx.load(str(fp32_onnx))
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["Conv"] == 9 and ops["Gemm"] == 1
    assert not {"BatchNormalization", "Shape", "Gather", "Div", "Pad"} & set(ops), ops
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    stride2 = [
        n
        for n in model.graph.node
        if n.op_type == "Conv"
        and list(next(a.ints for a in n.attribute if a.name == "strides")) == [2, 2]
        and list(next(a.ints for a in n.attribute if a.name == "kernel_shape")) == [3, 3]
    ]
    assert [list(next(a.ints for a in n.attribute if a.name == "pads")) for n in stride2] == [[0, 0, 1, 1]] * 2


@pytest.mark.parametrize(
    "shape, dtype, message",
    [
        ((2, 3, 32, 32), np.float32, r"shape \(N, 32, 32, 3\).*got \(2, 3, 32, 32\): transpose NCHW to NHWC"),
        ((2, 32, 32), np.float32, r"shape \(N, 32, 32, 3\)"),
        ((2, 32, 32, 3), np.float64, r"uint8 or float32 images \(values 0..255\), got float64: convert"),
    ],
)
def test_wrong_input_gets_a_clear_error(fp32_model, shape, dtype, message) -> None:
    with pytest.raises(PTQError, match=message):
        as_predictor(fp32_model)(np.zeros(shape, dtype))
