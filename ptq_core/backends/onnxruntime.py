"""ONNX Runtime ``quantize_static``: QDQ models from the FP32 ONNX file.

dtype names are activation/weight types: int8 = S8S8, uint8 = U8U8, u8s8 = U8S8 (the VNNI fast path).
quantize_static passes no bin counts to histogram calibrators (entropy then degenerates to min/max), so
every calibrator is built here with explicit options, and its ranges reach quantize_static as its
calibration cache. Ranges depend on the model, the images and the calibrator only, so every cell that
shares a calibrator shares them (entropy's KL search is ~11 s of pure Python). ``ptq tune`` also leaves
nodes in float (``nodes_to_exclude``) and searches other calibrator settings (``CALIBRATOR_VARIANTS``).

The scores leave the model in float, as NNCF's and torchao's do: quantize_static's default also quantizes
the softmax and the logits, and 8-bit probabilities tie the top class of 85-107 of ResNet8's 10,000 test
images (argmax then decides by class order), while OpenVINO runs a FakeQuantize after the softmax.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.backends import Backend, BuildInputs, MixedPrecision, Stored
from ptq_core.errors import PTQError
from ptq_core.formats.onnx import WEIGHT_OPS, input_name

MAX_CALIB_BATCH = 50
# measured on ResNet8: entropy 2048/128 best (86.6 %); 1024/128 86.1 %, 2048/512 85.8 %, 2048/255 71.6 %.
# distribution: ranges are +-max|x| even after a ReLU, yet the QDQ quantizer still drops the ReLUs (12-13 %).
CALIBRATOR_OPTIONS: dict[str, dict[str, object]] = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
    "distribution": {"num_bins": 2048, "scenario": "same"},
}
# searched by ptq tune beside the cells' own: clipping more outliers, and a coarser entropy histogram
CALIBRATOR_VARIANTS: dict[str, tuple[Mapping[str, object], ...]] = {
    "percentile": ({"percentile": 99.99}, {"percentile": 99.9}),
    "entropy": ({"num_bins": 1024},),
}


def weight_layers(inputs: BuildInputs) -> tuple[str, ...]:
    """The FP32 model's conv and gemm nodes: what ``nodes_to_exclude`` may leave in float."""
    import onnx

    return tuple(n.name for n in onnx.load(str(inputs.fp32)).graph.node if n.op_type in WEIGHT_OPS)


BACKEND = Backend(
    name="onnxruntime",
    source="onnx",
    format="onnx",
    dtypes={
        "u8s8": Stored(("uint8",), "int8"),
        "int8": Stored(("int8",), "int8"),
        "uint8": Stored(("uint8",), "uint8"),
    },
    calibrators=tuple(CALIBRATOR_OPTIONS),
    granularities=("per_channel", "per_tensor"),
    libraries=("onnxruntime",),
    # ResNet8's 78 k weights are ~310 KB of the 318 KB FP32 file; 8-bit weights with per-channel
    # scales leave ~100 KB: 3.1x measured, so 3.0x catches any weight left in float.
    min_file_ratio=3.0,
    mixed_precision=MixedPrecision(dtype="u8s8", ranking_runtime="onnxruntime", layers=weight_layers),
    calibrator_variants=CALIBRATOR_VARIANTS,
)


def _quant_types(dtype: str) -> tuple[Any, Any]:
    from onnxruntime.quantization import QuantType

    act, weight = {"int8": ("QInt8", "QInt8"), "uint8": ("QUInt8", "QUInt8"), "u8s8": ("QUInt8", "QInt8")}[dtype]
    return QuantType[act], QuantType[weight]


def _method(calibrator: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    names = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile", "distribution": "Distribution"}
    return CalibrationMethod[names[calibrator]]


class _ImageReader:
    """Feeds the calibration images in equal batches (histogram calibrators stack all batches into one array)."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        size = max(b for b in range(1, min(MAX_CALIB_BATCH, len(images)) + 1) if len(images) % b == 0)
        self._batches: Iterator[np.ndarray] = iter(np.split(images, len(images) // size))
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


def _workdir(out: Path) -> tempfile.TemporaryDirectory[str]:
    """A work folder for the pre-processed and augmented models, beside ``out`` (in the cache) and named
    ``.ptq_ort.X.PID.tmp``: one that a killed build leaves is removed by the next run
    (``cache.remove_stale_temporaries``), where a folder in /tmp would stay."""
    return tempfile.TemporaryDirectory(prefix=".ptq_ort.", suffix=f".{os.getpid()}.tmp", dir=out.parent)


def _preprocessed(fp32_onnx: Path, workdir: Path) -> Path:
    from onnxruntime.quantization import quant_pre_process

    pre = workdir / "pre.onnx"
    quant_pre_process(str(fp32_onnx), str(pre))
    return pre


def save_ranges(
    fp32_onnx: Path,
    calibrator: str,
    images: np.ndarray,
    input_name: str,
    out: Path,
    settings: Mapping[str, object],
) -> None:
    """The calibrator's activation ranges with ``settings`` (``calibrator_settings``) as quantize_static's
    calibration cache (JSON) at ``out``."""
    from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    with _workdir(Path(out)) as tmp:
        cal = create_calibrator(
            _preprocessed(fp32_onnx, Path(tmp)),
            sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),  # what quantize_static quantizes by default
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(calibrator),
            extra_options=dict(settings),
        )
        with contextlib.redirect_stdout(io.StringIO()):  # histogram collectors print progress
            cal.collect_data(_ImageReader(images, input_name))
            data = cal.compute_data()
    # sorted: the calibrator collects names in a set, whose order would follow the hash seed
    ranges = TensorsData(_method(calibrator), {name: data[name] for name in sorted(data.keys())})
    save_tensors_data(ranges, out)


def calibrator_settings(calibrator: str, options: Mapping[str, object] | None = None) -> dict[str, object]:
    """The calibrator's settings (``CALIBRATOR_OPTIONS``), ``options`` replacing some of them."""
    settings = CALIBRATOR_OPTIONS[calibrator]
    unknown = sorted(set(options or {}) - set(settings))
    if unknown:
        raise PTQError(f"{calibrator} calibrator option {unknown[0]!r}: choose among {', '.join(settings) or 'none'}")
    return {**settings, **(options or {})}


def ranges(inputs: BuildInputs, cell: Any, options: Mapping[str, object] | None = None) -> Path:
    """The cell's calibrator's ranges on the calibration images (with ``options``), built once and shared by
    every cell of that calibrator: the one place their file is named."""
    settings = calibrator_settings(cell.calibrator, options)
    tag = f"-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}" if options else ""
    images = np.ascontiguousarray(inputs.images)  # in the dtype the model takes
    return inputs.shared(
        f"ranges-{cell.calibrator}{tag}.json",
        lambda tmp: save_ranges(inputs.fp32, cell.calibrator, images, input_name(inputs.fp32), tmp, settings),
    )


def quantize(
    inputs: BuildInputs,
    cell: Any,
    out: Path,
    float_layers: tuple[str, ...] = (),
    calibrator_options: Mapping[str, object] | None = None,
) -> None:
    """Pre-process, take the calibrator's shared ranges, and quantize into a QDQ model at ``out``; the nodes
    named in ``float_layers`` stay in float."""
    quantize_with_ranges(inputs.fp32, ranges(inputs, cell, calibrator_options), cell, out, float_layers=float_layers)


def quantize_with_ranges(
    fp32_onnx: Path, ranges: Path, cell: Any, out: Path, fmt: str = "QDQ", float_layers: tuple[str, ...] = ()
) -> None:
    """quantize_static of the cell's dtype and granularity from a calibration cache; ``float_layers`` stay in
    float (mixed precision, ``ptq tune``); ``fmt`` "QOperator" is ``ptq bench --ort-attempts``'s."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    activation_type, weight_type = _quant_types(cell.dtype)
    with _workdir(Path(out)) as tmp:
        pre = _preprocessed(fp32_onnx, Path(tmp))
        softmaxes, score_ops = _score_tail(pre)
        quantize_static(
            str(pre),
            str(out),
            calibration_data_reader=None,
            quant_format=QuantFormat[fmt],
            per_channel=cell.granularity == "per_channel",
            activation_type=activation_type,
            weight_type=weight_type,
            calibrate_method=_method(cell.calibrator),
            calibration_cache_path=ranges,
            nodes_to_exclude=[*float_layers, *softmaxes],
            extra_options={"OpTypesToExcludeOutputQuantization": score_ops},
        )


def _score_tail(model: Path) -> tuple[list[str], list[str]]:
    """The softmax nodes that yield the graph outputs, and the op types whose outputs need no quantization
    for the scores to stay float. quantize_static excludes output quantization by op type only, so a type
    is named only when every node of it computes the scores (e.g. a classifier's single Gemm)."""
    import onnx

    graph = onnx.load(str(model)).graph
    producers = {out: node for node in graph.node for out in node.output}
    softmaxes, heads = [], []
    for output in graph.output:
        node = producers.get(output.name)
        if node is not None and node.op_type == "Softmax":
            softmaxes.append(node.name)
            node = producers.get(node.input[0])
        if node is not None:
            heads.append(node.name)
    score_types = {n.op_type for n in graph.node if n.name in heads}
    return softmaxes, sorted(t for t in score_types if all(n.name in heads for n in graph.node if n.op_type == t))
