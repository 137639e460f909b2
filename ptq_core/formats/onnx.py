"""ONNX: a clean, static FP32 export, and what a QDQ model stores (any quantizer that writes QDQ)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from ptq_core.errors import PTQError
from ptq_core.formats import Inspection

ONNX_OPSET = 20
INPUT_NAME, OUTPUT_NAME = "input", "probs"
WEIGHT_OPS = ("Conv", "Gemm")
EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)
# ops that rearrange values without computing new ones: a quantized tensor stays quantized through them
# (NNCF quantizes ResNet8's NHWC input before its Transpose)
MOVE_OPS = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def export(module: Any, out: Path, model: Any) -> None:
    """ONNX with BN folded, 'same' pads as Conv attributes, no shape subgraphs, a dynamic batch."""
    import torch

    from ptq_core.formats.pt2 import dynamic_batch, example_batch

    program = torch.onnx.export(
        module.eval(),
        (example_batch(model),),
        dynamo=True,
        optimize=True,
        opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=dynamic_batch(),
        verbose=False,
    )
    assert program is not None  # dynamo=True always returns a program
    proto = program.model_proto
    _strip_metadata(proto, model.name)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))


def _strip_metadata(proto: onnx.ModelProto, name: str) -> None:
    strip_provenance(proto)
    del proto.metadata_props[:]
    proto.graph.name = name


def strip_provenance(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node provenance and shape annotations: they are most of the file beyond the
    weights (66 KB in torch.onnx's MobileNetV1), and some quantizers keep them (NNCF) while others drop
    them (ONNX Runtime), which would decide a file-size comparison."""
    graph = proto.graph
    for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del item.metadata_props[:]
        item.doc_string = ""
    del graph.value_info[:]


def input_name(path: Path) -> str:
    return str(load(path).graph.input[0].name)


def load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except (OSError, DecodeError) as e:
        raise PTQError(f"cannot read ONNX model {path} ({e}): rebuild it, or pass a valid .onnx file") from e


class _Graph:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producers = {out: node for node in graph.node for out in node.output}
        self.initializers = {t.name: t for t in graph.initializer}
        self.weight_nodes = [n for n in graph.node if n.op_type in WEIGHT_OPS]

    def producer(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producers.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[name])

    def nbytes(self, names: list[str]) -> int:
        return sum(self.array(n).nbytes for n in names if n in self.initializers)

    def dtypes(self, names: list[str]) -> tuple[str, ...]:
        found = {self.initializers[n].data_type for n in names if n in self.initializers}
        return tuple(sorted(str(onnx.helper.tensor_dtype_to_np_dtype(t)) for t in found))

    def is_quantized_activation(self, tensor: str) -> bool:
        """``tensor`` is DequantizeLinear(QuantizeLinear(...)), possibly behind ops that only move values."""
        node = self.producers.get(tensor)
        while node is not None and node.op_type in MOVE_OPS:
            node = self.producers.get(node.input[0])
        return (
            node is not None
            and node.op_type == "DequantizeLinear"
            and self.producer(node.input[0], "QuantizeLinear") is not None
        )

    def activation_quantizers(self) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in self.initializers]


def inspect(path: Path) -> Inspection:
    """How much of the model at ``path`` (quantized or FP32) is really stored and computed in 8 bits."""
    g = _Graph(load(path).graph)
    quantized: list[onnx.NodeProto] = []
    float_weights: list[str] = []
    for node in g.weight_nodes:
        dq = g.producer(node.input[1], "DequantizeLinear")
        stored = g.initializers.get(dq.input[0] if dq is not None else node.input[1])
        if dq is not None and stored is not None and stored.data_type in EIGHT_BIT:
            quantized.append(dq)
        elif stored is not None and stored.data_type == TensorProto.FLOAT:
            float_weights.append(stored.name)
    activations = g.activation_quantizers()
    return Inspection(
        weight_ops=len(g.weight_nodes),
        quantized_weight_ops=len(quantized),
        activations_quantized=bool(g.weight_nodes)
        and all(g.is_quantized_activation(n.input[0]) for n in g.weight_nodes),
        weight_dtypes=g.dtypes([dq.input[0] for dq in quantized]),
        activation_dtypes=g.dtypes([q.input[2] for q in activations if len(q.input) > 2]),
        weight_granularities=tuple(
            sorted({"per_channel" if g.array(dq.input[1]).size > 1 else "per_tensor" for dq in quantized})
        ),
        payload_bytes=g.nbytes([name for dq in quantized for name in dq.input]),
        float_weight_bytes=g.nbytes(float_weights),
        file_bytes=Path(path).stat().st_size,
        activation_scales={q.input[0]: float(g.array(q.input[1]).max()) for q in activations},
    )


def uint8_input(qdq: Path, out: Path) -> None:
    """The QDQ model taking the raw uint8 pixels: the QuantizeLinear of the input is dropped, which is exact
    only when it maps pixels to themselves (scale 1, zero point 0: minmax over [0, 255] gives exactly that)."""
    proto = onnx.load(str(qdq))
    g = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    tensor = g.input[0].name
    moved = []  # tensors between the input and its QuantizeLinear: uint8 now
    consumers = [n for n in g.node if tensor in n.input]
    while len(consumers) == 1 and consumers[0].op_type in MOVE_OPS:
        tensor = consumers[0].output[0]
        moved.append(tensor)
        consumers = [n for n in g.node if tensor in n.input]
    (q,) = consumers
    scale, zero = inits[q.input[1]], inits[q.input[2]]
    if q.op_type != "QuantizeLinear" or float(scale) != 1.0 or int(zero) != 0 or zero.dtype != np.uint8:
        raise ValueError(f"the input's QuantizeLinear is not exact on uint8 pixels (scale {scale}, zero point {zero})")
    for node in g.node:
        node.input[:] = [tensor if i == q.output[0] else i for i in node.input]
    g.node.remove(q)
    g.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    for info in g.value_info:
        if info.name in moved:
            info.type.tensor_type.elem_type = TensorProto.UINT8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
