"""Every check of ``ptq_core.checks`` refuses what it exists to refuse, and passes its near twin.

The suite's real cells nearly all pass their checks, so a check weakened anywhere a known failure does not
sit would go unnoticed. Here each check meets small synthetic artifacts made to violate exactly its
property (an ONNX QDQ model with one conv left on a float weight, per-tensor scales in a per-channel cell,
u8 weights in an s8 cell, a bloated file, a depthwise model whose per-channel scales outweigh its 8-bit
weights, a runtime whose FP32 scores differ, a calibration record from the test split, a class that
collapses by just over the limit, a calibrator whose scales are minmax's) and must fail with its message;
the twin that differs only there must pass. Every limit is tested just inside and just outside.

These are also the "checks on anything" examples: a ``Context`` is built by hand from two model files, a
calibration set, the key the artifact was built under and an ``evaluate`` (here faked, returning
``EvalResult``), as a user builds one for their own artifacts.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq_core import checks
from ptq_core.calibration import CalibrationConfig, CalibrationSet
from ptq_core.checks import CheckFailed, Context
from ptq_core.eval import EvalResult, evaluate
from ptq_core.evaluation import EvaluationFailed, Outcome
from ptq_core.formats import Inspection
from ptq_core.matrix import Cell
from ptq_core.runtimes import RUNTIMES, Runtime
from tests.onnx_models import make_model

# ResNet8's input and classes (NHWC raw pixels, 10 softmax probabilities); a cell no known failure names
CELL = Cell("onnxruntime", "u8s8", "percentile", "per_channel")
INT8 = {"int8": np.int8, "uint8": np.uint8}


def qdq_model(
    path: Path,
    *,
    quantize: bool = True,
    float_weight: tuple[str, ...] = (),
    float_activation: tuple[str, ...] = (),
    per_tensor: tuple[str, ...] = (),
    weight_dtype: dict[str, str] | None = None,
    activations: str = "uint8",
    activation_scales: dict[str, float] | None = None,
    classes: int = 10,
    softmax: bool = True,
    depthwise: bool = False,
    bloat: int = 0,
    batch: int | str = "N",
) -> Path:
    """(N, 32, 32, 3) float raw pixels -> (N, classes) probabilities: Transpose, conv1 3x3 (3 -> 32), ReLU,
    conv2 3x3 stride 2 (32 -> 64), ReLU, global average pool, a dense layer and a softmax, written as a
    QDQ model the way ONNX Runtime writes one (s8 weights with one scale per output channel, zero point 0;
    u8 activations quantized at the input of every conv/linear), unless told to leave a weight
    (``"conv1"``, ``"conv2"``, ``"fc"``) or an activation (``"x"``, ``"a1"``, ``"a2"``) in float, store
    weights in another dtype or per tensor, bloat the file with ``bloat`` bytes of metadata, or fix the batch.
    ``depthwise``: conv1 3 -> 256 and conv2 depthwise, 9 weights per output channel (as MobileNetV1's)."""
    rng = np.random.default_rng(0)
    width = 256 if depthwise else 32
    weights = {
        "conv1": rng.normal(0, 0.2, (width, 3, 3, 3)),
        "conv2": rng.normal(0, 0.2, (width, 1, 3, 3)) if depthwise else rng.normal(0, 0.05, (64, 32, 3, 3)),
        "fc": rng.normal(0, 0.1, (classes, width if depthwise else 64)),
    }
    scales = {"x": 255 / 254 if activations == "uint8" else 255 / 127, "a1": 0.05, "a2": 0.02}
    scales.update(activation_scales or {})
    weight_dtype = weight_dtype or {}
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(array: Any, name: str) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def activation(tensor: str, name: str) -> str:
        if not quantize or name in float_activation:
            return tensor
        scale = const(np.float32(scales[name]), f"{name}_scale")
        zero = const(INT8[activations](0), f"{name}_zero_point")
        nodes.append(helper.make_node("QuantizeLinear", [tensor, scale, zero], [f"{name}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", scale, zero], [f"{name}_dq"]))
        return f"{name}_dq"

    def weight(name: str) -> str:
        w = weights[name].astype(np.float32)
        if not quantize or name in float_weight:
            return const(w, f"{name}_w")
        dtype = weight_dtype.get(name, "int8")
        per_channel = np.abs(w.reshape(len(w), -1)).max(axis=1) / 127
        scale = np.float32(per_channel.max()) if name in per_tensor else per_channel.astype(np.float32)
        zero_point = 0 if dtype == "int8" else 128  # ONNX Runtime's U8U8 weights: u8 around 128
        broadcast = np.reshape(scale, (-1,) + (1,) * (w.ndim - 1)) if scale.ndim else scale
        q = np.clip(np.round(w / broadcast), -127, 127) + zero_point
        args = [
            const(q.astype(INT8[dtype]), f"{name}_quantized"),
            const(scale, f"{name}_scale"),
            const(np.full(scale.shape, zero_point, INT8[dtype]), f"{name}_zero_point"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", args, [f"{name}_w"], axis=0))
        return f"{name}_w"

    def bias(name: str) -> str:
        return const(np.zeros(len(weights[name]), np.float32), f"{name}_b")

    conv2_attrs = {"group": width} if depthwise else {}
    nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
    x = activation("nchw", "x")
    nodes.append(helper.make_node("Conv", [x, weight("conv1"), bias("conv1")], ["c1"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    x = activation("r1", "a1")
    nodes.append(
        helper.make_node(
            "Conv", [x, weight("conv2"), bias("conv2")], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], **conv2_attrs
        )
    )
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["r2"], ["p"]))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"]))
    x = activation("f", "a2")
    nodes.append(helper.make_node("Gemm", [x, weight("fc"), bias("fc")], ["logits"], transB=1))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 32, 32, 3])],
        [helper.make_tensor_value_info("probs" if softmax else "logits", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    model = make_model(graph)
    if bloat:  # as an exporter's provenance left in a quantized file
        helper.set_model_props(model, {"provenance": "x" * bloat})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# name -> how it is built; each differs from "qdq" (a correct U8S8 per-channel model) in one property
ARTIFACTS: dict[str, dict[str, Any]] = {
    "fp32": {"quantize": False},
    "qdq": {},
    "s8_activations": {"activations": "int8"},
    # 3.4 KB of float weights (the size check passes it), calibrated as "calibrated"
    "float_conv1": {"float_weight": ("conv1",), "activation_scales": {"a1": 0.04}},
    "float_activation": {"float_activation": ("a2",)},  # the dense layer reads the float pooled features
    "u8_weights": {"weight_dtype": {"conv1": "uint8", "conv2": "uint8", "fc": "uint8"}},
    "one_u8_weight": {"weight_dtype": {"fc": "uint8"}},
    "per_tensor": {"per_tensor": ("conv1", "conv2", "fc")},
    "one_per_tensor": {"per_tensor": ("fc",)},
    "bloated": {"bloat": 60_000},
    "fp32_depthwise": {"quantize": False, "depthwise": True},
    "depthwise": {"depthwise": True},
    "depthwise_per_tensor": {"depthwise": True, "per_tensor": ("conv1", "conv2", "fc")},
    "nine_classes": {"classes": 9},
    "fp32_nine_classes": {"quantize": False, "classes": 9},
    "logits": {"softmax": False},
    "batch_of_64": {"batch": 64},  # exported with an example batch: only a full batch runs
    "calibrated": {"activation_scales": {"a1": 0.04}},  # another calibrator moved one range
    "calibrated_as_minmax": {},  # another calibrator's artifact with minmax's scales
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    return {name: qdq_model(folder / f"{name}.onnx", **kw) for name, kw in ARTIFACTS.items()}


def calibration_set(labels: np.ndarray | None = None, config: CalibrationConfig | None = None) -> CalibrationSet:
    labels = np.arange(20) % 10 if labels is None else labels
    images = np.random.default_rng(2).uniform(0, 255, (len(labels), 32, 32, 3)).astype(np.float32)
    return CalibrationSet(images, labels, np.arange(len(labels)), config or CalibrationConfig(num_samples=20))


def built_under(calib: CalibrationSet) -> dict[str, Any]:
    """The part of an artifact's key the calibration check reads (``ArtifactStore.build_inputs``)."""
    return {"calibration": asdict(calib.config), "calibration_sha256": calib.sha256}


def answered(path: Path, runtime: str) -> EvalResult:
    """The model scored on 64 random images, as a store scores an artifact on its test split."""
    images = np.random.default_rng(3).uniform(0, 255, (64, 32, 32, 3)).astype(np.float32)
    return evaluate(path, images, np.arange(64) % 10, CELL.model_spec, runtime)


def not_scored(path: Path, runtime: str) -> EvalResult:
    raise AssertionError("this check does not score the model")


def context(
    artifact: Path,
    fp32: Path,
    cell: Cell = CELL,
    evaluate: Any = not_scored,
    calibration: CalibrationSet | None = None,
    record: dict[str, Any] | None = None,
    **fields: Any,
) -> Context:
    calib = calibration if calibration is not None else calibration_set()
    return Context(
        cell=cell,
        artifact=artifact,
        fp32=fp32,
        evaluate=evaluate,
        calibration=calib,
        record=built_under(calib) if record is None else record,
        **fields,
    )


def refuses(ctx: Context, check: Any, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check(ctx)


def cases(*rows: tuple[str, ...]) -> list[Any]:
    """Parameters named by all but their last value (the expected message)."""
    return [pytest.param(*row, id="-".join(row[:-1])) for row in rows]


# check_output_shape


def test_output_shape_passes_a_model_answering_the_classes_as_probabilities(models) -> None:
    checks.check_output_shape(context(models["qdq"], models["fp32"], evaluate=answered, runtime="onnxruntime"))


def test_output_shape_refuses_a_model_answering_another_number_of_classes(models) -> None:
    ctx = context(models["nine_classes"], models["fp32_nine_classes"], evaluate=answered, runtime="onnxruntime")
    refuses(ctx, checks.check_output_shape, r"on onnxruntime: batch of 1 gave scores of shape \(1, 9\), not \(1, 10\)")


def test_output_shape_refuses_a_model_that_answers_only_a_full_batch(models) -> None:
    ctx = context(models["batch_of_64"], models["fp32"], evaluate=answered, runtime="onnxruntime")
    refuses(ctx, checks.check_output_shape, r"on onnxruntime: failed while scoring: on images 0-0: .*Expected: 64")


def test_output_shape_refuses_logits_where_fp32_answers_probabilities(models) -> None:
    ctx = context(models["logits"], models["fp32"], evaluate=answered, runtime="onnxruntime")
    refuses(ctx, checks.check_output_shape, r"rows of probabilities sum to 1 \+- \d+\.\d+, not float probabilities")


def test_output_shape_refuses_a_file_the_runtime_cannot_load(models, tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(models["qdq"].read_bytes()[:1000])
    ctx = context(broken, models["fp32"], evaluate=answered, runtime="onnxruntime")
    refuses(ctx, checks.check_output_shape, "on onnxruntime: failed to load")


# check_calibration_stratified


def test_calibration_passes_the_artifact_built_from_its_own_set(models) -> None:
    checks.check_calibration_stratified(context(models["qdq"], models["fp32"]))


def test_calibration_refuses_an_artifact_built_from_the_test_split(models) -> None:
    calib = calibration_set()
    record = built_under(calibration_set(config=CalibrationConfig(num_samples=20, split="test")))
    record["calibration_sha256"] = calib.sha256  # even with the very same images
    refuses(
        context(models["qdq"], models["fp32"], calibration=calib, record=record),
        checks.check_calibration_stratified,
        r"built with calibration \{.*'split': 'test'\}, not \{.*'split': 'train'\}",
    )


def test_calibration_refuses_another_seed(models) -> None:
    calib = calibration_set()
    record = {**built_under(calib), "calibration": asdict(CalibrationConfig(num_samples=20, seed=7))}
    refuses(context(models["qdq"], models["fp32"], calibration=calib, record=record),
            checks.check_calibration_stratified, r"'seed': 7")  # fmt: skip


def test_calibration_refuses_other_images_under_the_same_config(models) -> None:
    calib = calibration_set()
    other = CalibrationSet(calib.images[::-1].copy(), calib.labels, calib.indices, calib.config)
    refuses(
        context(models["qdq"], models["fp32"], calibration=calib, record=built_under(other)),
        checks.check_calibration_stratified,
        "built from other calibration images than its calibration set",
    )


@pytest.mark.parametrize(
    ("counts", "stratified"),
    [((2,) * 10, True), ((3,) * 5 + (2,) * 5, True), ((3,) + (2,) * 8 + (1,), False), ((4,) + (2,) * 9, False)],
    ids=["equal", "within-one", "two-apart", "one-class-over"],
)
def test_calibration_stratified_within_one_image_per_class(models, counts, stratified) -> None:
    labels = np.repeat(np.arange(10), counts)
    calib = calibration_set(labels, CalibrationConfig(num_samples=len(labels)))
    ctx = context(models["qdq"], models["fp32"], calibration=calib)
    if stratified:
        checks.check_calibration_stratified(ctx)
    else:
        refuses(ctx, checks.check_calibration_stratified, rf"of {len(labels)} images is not stratified: per-class")


def test_calibration_refuses_a_set_smaller_than_its_config(models) -> None:
    calib = calibration_set(np.arange(20) % 10, CalibrationConfig(num_samples=21))
    refuses(context(models["qdq"], models["fp32"], calibration=calib), checks.check_calibration_stratified,
            "calibration set of 20 images is not stratified")  # fmt: skip


# check_weights_are_8bit


def test_weights_8bit_passes_a_model_whose_every_conv_and_linear_is_quantized(models) -> None:
    checks.check_weights_are_8bit(context(models["qdq"], models["fp32"]))


@pytest.mark.parametrize(
    ("name", "message"),
    cases(
        ("float_conv1", "only 2 of 3 conv/linear ops take 8-bit weights"),
        ("fp32", "only 0 of 3 conv/linear ops take 8-bit weights"),
        ("float_activation", "some conv/linear input is not a quantized activation"),
    ),
)
def test_weights_8bit_refuses_a_float_weight_or_activation(models, name, message) -> None:
    refuses(context(models[name], models["fp32"]), checks.check_weights_are_8bit, message)


def test_weights_8bit_refuses_a_model_without_conv_or_linear(tmp_path, models) -> None:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input"], ["probs"], axis=1)],
        "no_weights",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
    )
    onnx.save(make_model(graph), str(tmp_path / "none.onnx"))
    refuses(context(tmp_path / "none.onnx", models["fp32"]), checks.check_weights_are_8bit, "only 0 of 0")


# check_runs_8bit_on_openvino


def test_openvino_runs_a_qdq_model_in_8_bits(models) -> None:
    checks.check_runs_8bit_on_openvino(context(models["qdq"], models["fp32"]))
    checks.check_runs_8bit_on_openvino(
        context(models["s8_activations"], models["fp32"], cell=CELL.replace(dtype="int8"))
    )


@pytest.mark.parametrize(
    ("name", "message"),
    cases(
        ("float_conv1", r"1 of 3 conv/linear ops run in \['f32'\] on OpenVINO"),  # the dense layer runs in u8
        ("u8_weights", r"2 of 3 conv/linear ops run in \['f32'\] on OpenVINO"),  # as ResNet8's U8U8 convs
        ("fp32", r"3 of 3 conv/linear ops run in \['f32'\] on OpenVINO"),
    ),
)
def test_openvino_refuses_a_model_it_runs_partly_in_float(models, name, message) -> None:
    refuses(context(models[name], models["fp32"]), checks.check_runs_8bit_on_openvino, message)


# check_dtypes_as_named


@pytest.mark.parametrize(("dtype", "name"), [("u8s8", "qdq"), ("int8", "s8_activations"), ("uint8", "u8_weights")])
def test_dtypes_pass_what_the_dtype_name_stores(models, dtype, name) -> None:
    checks.check_dtypes_as_named(context(models[name], models["fp32"], cell=CELL.replace(dtype=dtype)))


def test_dtypes_of_nncf_activations_may_be_signed_or_not(models) -> None:
    for name in ("qdq", "s8_activations"):
        checks.check_dtypes_as_named(context(models[name], models["fp32"], cell=Cell("nncf")))


@pytest.mark.parametrize(
    ("dtype", "name", "message"),
    cases(
        ("u8s8", "u8_weights", r"weights stored as \('uint8',\), the cell names int8"),
        ("u8s8", "one_u8_weight", r"weights stored as \('int8', 'uint8'\), the cell names int8"),
        ("uint8", "qdq", r"weights stored as \('int8',\), the cell names uint8"),
        ("u8s8", "s8_activations", r"activations quantized to \('int8',\), the cell names \('uint8',\)"),
        ("int8", "qdq", r"activations quantized to \('uint8',\), the cell names \('int8',\)"),
        ("u8s8", "fp32", r"weights stored as \(\), the cell names int8"),
    ),
)
def test_dtypes_refuse_what_the_dtype_name_does_not_store(models, dtype, name, message) -> None:
    refuses(
        context(models[name], models["fp32"], cell=CELL.replace(dtype=dtype)), checks.check_dtypes_as_named, message
    )


# check_granularity_as_named


@pytest.mark.parametrize(("granularity", "name"), [("per_channel", "qdq"), ("per_tensor", "per_tensor")])
def test_granularity_passes_the_scales_the_cell_names(models, granularity, name) -> None:
    ctx = context(models[name], models["fp32"], cell=CELL.replace(granularity=granularity))
    checks.check_granularity_as_named(ctx)


@pytest.mark.parametrize(
    ("granularity", "name", "message"),
    cases(
        ("per_channel", "per_tensor", r"weight scales are \('per_tensor',\), the cell names per_channel"),
        ("per_tensor", "qdq", r"weight scales are \('per_channel',\), the cell names per_tensor"),
        ("per_channel", "one_per_tensor", r"weight scales are \('per_channel', 'per_tensor'\)"),
        ("per_tensor", "one_per_tensor", r"weight scales are \('per_channel', 'per_tensor'\)"),
        ("per_channel", "fp32", r"weight scales are \(\)"),
    ),
)
def test_granularity_refuses_other_scales(models, granularity, name, message) -> None:
    ctx = context(models[name], models["fp32"], cell=CELL.replace(granularity=granularity))
    refuses(ctx, checks.check_granularity_as_named, message)


# check_size_ratio: files, then the limits on inspections made to measure


def test_size_passes_8bit_weights_in_a_small_file(models) -> None:
    checks.check_size_ratio(context(models["qdq"], models["fp32"]))
    checks.check_size_ratio(context(models["depthwise_per_tensor"], models["fp32_depthwise"]))


def test_size_refuses_a_bloated_file(models) -> None:
    refuses(
        context(models["bloated"], models["fp32"]),
        checks.check_size_ratio,
        r"bloated.onnx is \d+ B, \d+\.\d\dx larger than fp32.onnx \(need 3.0x smaller\)",
    )


def test_size_refuses_scales_that_outweigh_the_8bit_weights(models) -> None:
    """Per-channel scales and zero points of a depthwise conv, 5 B for 9 int8 weights: 3.27x, not 4x."""
    refuses(
        context(models["depthwise"], models["fp32_depthwise"]),
        checks.check_size_ratio,
        r"weights take 14386 B, only 3\.27x less than the FP32 artifact's 47104 B \(need 3\.8x\)",
    )


def test_size_passes_a_float_weight_too_small_to_see_which_the_8bit_check_refuses(models) -> None:
    ctx = context(models["float_conv1"], models["fp32"])
    checks.check_size_ratio(ctx)
    refuses(ctx, checks.check_weights_are_8bit, "only 2 of 3")


def inspection(payload: int = 0, float_weights: int = 0, file: int = 1) -> Inspection:
    return Inspection(1, 1, True, ("int8",), ("uint8",), ("per_channel",), payload, float_weights, file)


def measured(cell: Cell, quantized: Inspection, fp32: Inspection) -> Context:
    ctx = context(Path("quantized.onnx"), Path("fp32.onnx"), cell=cell)
    ctx._cache.update(inspection=quantized, fp32_inspection=fp32)
    return ctx


@pytest.mark.parametrize(("payload", "passes"), [(10_000, True), (10_001, False)], ids=["3.80x", "3.7996x"])
def test_payload_ratio_limit(payload, passes) -> None:
    # 38,000 B of FP32 weights; the files (40,000 B and 12,000 B, 3.33x) pass, and differ from the payload
    ctx = measured(CELL, inspection(payload=payload, file=12_000), inspection(float_weights=38_000, file=40_000))
    assert checks.MIN_PAYLOAD_RATIO == 3.8
    if passes:
        checks.check_size_ratio(ctx)
    else:
        refuses(ctx, checks.check_size_ratio, r"weights take 10001 B, only 3\.80x less .* 38000 B \(need 3\.8x\)")


@pytest.mark.parametrize("backend", ["onnxruntime", "nncf", "pytorch"])
@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_file_ratio_limit(backend, extra) -> None:
    cell = Cell(backend)
    limit = cell.backend_spec.min_file_ratio
    assert limit == {"onnxruntime": 3.0, "nncf": 3.0, "pytorch": 2.0}[backend]
    fp32_file = int(12_000 * limit)  # the payload, 10,000 B of 40,000 B FP32 weights (4x), passes
    ctx = measured(
        cell, inspection(payload=10_000, file=12_000 + extra), inspection(float_weights=40_000, file=fp32_file)
    )
    if not extra:
        checks.check_size_ratio(ctx)
    else:
        refuses(
            ctx,
            checks.check_size_ratio,
            rf"is 12001 B, only {limit:.2f}x smaller than fp32.onnx \(need {limit}x smaller\)",
        )


# check_accuracy_vs_fp32 and check_no_class_collapses: on results made to measure


def result(correct: int, total: int = 10_000, per_class: tuple[float, ...] | None = None) -> EvalResult:
    """As a load that answered ten probabilities per image scores it."""
    per_class = per_class if per_class is not None else (correct / total,) * 10
    return EvalResult(correct, total, per_class, np.zeros(0, np.int64), {1: (1, 10), 64: (64, 10)}, 0.0)


def scored(models: dict[str, Path], quantized: dict[str, EvalResult], fp32: dict[str, EvalResult]):
    """An ``evaluate`` that answers ``quantized[runtime]`` for the artifact and ``fp32[runtime]`` for FP32."""

    def evaluate(path: Path, runtime: str) -> EvalResult:
        return (fp32 if path == models["fp32"] else quantized)[runtime]

    return evaluate


@pytest.mark.parametrize(
    ("fp32", "quantized", "max_drop", "passes"),
    [
        (8719, 8419, 3.0, True),  # exactly 3.00 points: within the limit
        (8719, 8418, 3.0, False),  # 3.01
        (8700, 8400, 3.0, True),  # 3.00 again, where (0.87 - 0.84) * 100 is 3.0000000000000027 in floats
        (8614, 8584, 0.3, True),  # ptq run --max-drop 0.3: 30 images
        (8614, 8583, 0.3, False),
        (5000, 5000, 0.0, True),  # --max-drop 0: no loss at all
        (5000, 4999, 0.0, False),
    ],
)
def test_accuracy_drop_limit(models, fp32, quantized, max_drop, passes) -> None:
    evaluate = scored(models, {"onnxruntime": result(quantized)}, {"onnxruntime": result(fp32)})
    ctx = context(models["qdq"], models["fp32"], evaluate=evaluate, runtime="onnxruntime", max_drop=max_drop)
    if passes:
        checks.check_accuracy_vs_fp32(ctx)
    else:
        refuses(ctx, checks.check_accuracy_vs_fp32, rf"on onnxruntime: scored .* \({quantized}/10000\), .* points "
                rf"below FP32 .* \(allowed {max_drop:g}\)")  # fmt: skip
    assert checks.MAX_ACCURACY_DROP_POINTS == 3.0 == Context.max_drop


SKEWED = "skewed"


@pytest.fixture
def skewed_runtime(monkeypatch) -> str:
    """An ONNX runtime whose FP32 scores differ from ONNX Runtime's (kernels of its own); registered here only."""
    monkeypatch.setitem(RUNTIMES, SKEWED, Runtime(SKEWED, "onnx", ("onnxruntime",), RUNTIMES["onnxruntime"].load))
    return SKEWED


@pytest.mark.parametrize(("quantized", "passes"), [(5900, True), (5699, False)])
def test_accuracy_is_against_fp32_on_the_same_runtime(models, skewed_runtime, quantized, passes) -> None:
    """On a runtime where FP32 scores 60 %, a cell at 59 % holds (1 point) and one at 56.99 % does not
    (3.01 points), whatever FP32 scores on ONNX Runtime (87 %)."""
    fp32 = {rt.name: result(8700) for rt in CELL.runtimes} | {skewed_runtime: result(6000)}
    evaluate = scored(models, {skewed_runtime: result(quantized)}, fp32)
    ctx = context(models["qdq"], models["fp32"], evaluate=evaluate).on(skewed_runtime)
    if passes:
        checks.check_accuracy_vs_fp32(ctx)
    else:
        refuses(ctx, checks.check_accuracy_vs_fp32, r"on skewed: scored 56.99% .* 3.01 points below FP32 60.00%")


def test_a_runtime_that_cannot_score_fails_the_accuracy_checks_with_its_reason(models) -> None:
    def evaluate(path: Path, runtime: str) -> EvalResult:
        if path == models["fp32"]:
            return result(8700)
        raise EvaluationFailed(Outcome.FAILED_TO_LOAD, "onnxruntime: RuntimeError: no kernel for it")

    ctx = context(models["qdq"], models["fp32"], evaluate=evaluate, runtime="onnxruntime")
    for check in (checks.check_accuracy_vs_fp32, checks.check_no_class_collapses):
        refuses(ctx, check, "on onnxruntime: failed to load: onnxruntime: RuntimeError: no kernel for it")


FP32_PER_CLASS = (0.9,) * 10


@pytest.mark.parametrize(
    ("class_3", "passes"),
    [(800, True), (799, False), (850, True), (0, False)],
    ids=["10.0-points", "10.1-points", "5.0-points", "collapsed"],
)
def test_class_drop_limit(models, class_3, passes) -> None:
    """Per class of 1,000 images: class 3 falls by 100 images (10.0 points) or 101 (10.1)."""
    quant = result(8100 + class_3, per_class=FP32_PER_CLASS[:3] + (class_3 / 1000,) + FP32_PER_CLASS[4:])
    fp32 = result(9000, per_class=FP32_PER_CLASS)
    evaluate = scored(models, {"onnxruntime": quant}, {"onnxruntime": fp32})
    ctx = context(models["qdq"], models["fp32"], evaluate=evaluate, runtime="onnxruntime")
    assert checks.MAX_CLASS_DROP_POINTS == 10.0
    if passes:
        checks.check_no_class_collapses(ctx)
    else:
        drop = round((900 - class_3) / 10, 1)
        refuses(ctx, checks.check_no_class_collapses, rf"class 3 fell {drop} points below FP32 \(allowed 10.0\)")


def test_a_collapse_hides_inside_a_small_overall_drop(models) -> None:
    """One class losing 10.1 points costs the whole only 1.01 (10 classes): the accuracy check passes it."""
    quant = result(8899, per_class=FP32_PER_CLASS[:3] + (0.799,) + FP32_PER_CLASS[4:])
    evaluate = scored(models, {"onnxruntime": quant}, {"onnxruntime": result(9000, per_class=FP32_PER_CLASS)})
    ctx = context(models["qdq"], models["fp32"], evaluate=evaluate, runtime="onnxruntime")
    checks.check_accuracy_vs_fp32(ctx)
    refuses(ctx, checks.check_no_class_collapses, "class 3 fell 10.1 points")


def test_class_drop_is_against_fp32_on_the_same_runtime(models, skewed_runtime) -> None:
    fp32 = {rt.name: result(9000, per_class=FP32_PER_CLASS) for rt in CELL.runtimes}
    fp32[skewed_runtime] = result(8000, per_class=(0.8,) * 10)
    evaluate = scored(models, {skewed_runtime: result(7500, per_class=(0.75,) * 10)}, fp32)
    checks.check_no_class_collapses(context(models["qdq"], models["fp32"], evaluate=evaluate).on(skewed_runtime))


# check_calibrator_changes_activation_ranges


def siblings(models: dict[str, Path]):
    def sibling(cell: Cell) -> Path:
        assert cell == CELL.replace(calibrator="minmax"), cell
        return models["qdq"]

    return sibling


def test_calibrator_passes_a_model_whose_ranges_moved(models) -> None:
    ctx = context(models["calibrated"], models["fp32"], sibling=siblings(models))
    checks.check_calibrator_changes_activation_ranges(ctx)


def test_calibrator_refuses_a_model_with_minmax_ranges(models) -> None:
    ctx = context(models["calibrated_as_minmax"], models["fp32"], sibling=siblings(models))
    refuses(
        ctx,
        checks.check_calibrator_changes_activation_ranges,
        "every activation scale equals minmax's: the percentile calibrator did nothing",
    )


@pytest.mark.parametrize("name", ["float_activation", "fp32"])
def test_calibrator_refuses_other_quantized_activations_than_minmax(models, name) -> None:
    ctx = context(models[name], models["fp32"], sibling=siblings(models))
    refuses(ctx, checks.check_calibrator_changes_activation_ranges, "its quantized activations are not the minmax")


# run_checks on anything: the same artifacts, every check at once


def run_all(models: dict[str, Path], artifact: str) -> dict[str, list[str]]:
    """Every check on one synthetic artifact, as a user runs them on their own: check -> failure messages."""
    fp32 = result(9000, per_class=FP32_PER_CLASS)
    evaluate = scored(models, {rt.name: result(8950, per_class=FP32_PER_CLASS) for rt in CELL.runtimes},
                      {rt.name: fp32 for rt in CELL.runtimes})  # fmt: skip
    ctx = context(models[artifact], models["fp32"], evaluate=evaluate, sibling=siblings(models))
    failed: dict[str, list[str]] = {}
    for outcome in checks.run_checks(lambda cell: ctx, (CELL,)):
        if not outcome.passed:
            failed.setdefault(outcome.check, []).append(outcome.message)
    return failed


def test_run_checks_passes_a_correct_artifact(models) -> None:
    assert run_all(models, "calibrated") == {}


def test_run_checks_names_what_a_float_conv_breaks(models) -> None:
    failed = run_all(models, "float_conv1")
    assert sorted(failed) == ["check_runs_8bit_on_openvino", "check_weights_are_8bit"]
    assert failed["check_weights_are_8bit"] == [f"{CELL.id}: only 2 of 3 conv/linear ops take 8-bit weights"]


def test_run_checks_names_what_a_float_model_breaks(models) -> None:
    failed = run_all(models, "fp32")
    assert sorted(failed) == [
        "check_calibrator_changes_activation_ranges",
        "check_dtypes_as_named",
        "check_granularity_as_named",
        "check_runs_8bit_on_openvino",
        "check_size_ratio",
        "check_weights_are_8bit",
    ]


def test_the_synthetic_twins_differ_only_where_they_should(models, tmp_path) -> None:
    """The twins are what the negatives are measured against: same graph, one property apart."""
    from ptq_core.formats import FORMATS

    found = {name: FORMATS["onnx"].inspect(path) for name, path in models.items()}
    assert found["qdq"].weight_ops == found["qdq"].quantized_weight_ops == 3 and found["qdq"].activations_quantized
    assert found["calibrated_as_minmax"] == found["qdq"]
    assert found["calibrated"].activation_scales == {**found["qdq"].activation_scales, "r1": pytest.approx(0.04)}
    assert found["bloated"].payload_bytes == found["qdq"].payload_bytes
    assert found["bloated"].file_bytes > found["fp32"].file_bytes
    copy = tmp_path / "copy.onnx"
    shutil.copyfile(models["qdq"], copy)
    assert FORMATS["onnx"].inspect(copy) == found["qdq"]
