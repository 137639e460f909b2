"""One layer of a QDQ model, seen against the FP32 model: the same model with only that layer in float, and what
its 8 bits cost (weight SQNR, the activation range the calibrator chose for its output, the range FP32 reaches).

A layer's own quantization is its weights (and bias) and its output's QuantizeLinear/DequantizeLinear pair; its
input's pair belongs to the layer before. ONNX Runtime's QDQ quantizer drops a ReLU after a conv when the
output's quantization clamps at zero, so leaving the output in float puts the FP32 graph's ReLU back.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ptq_core.errors import PTQError
from ptq_core.formats.onnx import input_name

CLAMP_OPS = ("Relu",)  # what the QDQ quantizer folds into a conv's output quantization, as far as handled here
BATCH = 256


@dataclass(frozen=True)
class LayerQuantization:
    """What quantizing one layer did, measured on the graphs and on images."""

    output_tensor: str | None  # the tensor its output QuantizeLinear quantizes (None: its output stays float)
    weight_sqnr_db: float  # 20 log10(|w| / |w - dequantized w|)
    calibrated_range: tuple[float, float] | None  # [(qmin - zp) * scale, (qmax - zp) * scale] of that tensor
    float_range: tuple[float, float] | None  # min and max of that tensor in the FP32 model on the images


def preprocess(fp32_onnx: Path, out: Path) -> None:
    """The FP32 model as quantize_static saw it (pre-processed): its tensor names are the QDQ model's."""
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(fp32_onnx), str(out))


def _index(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    producers = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    return producers, consumers


def _node(graph: onnx.GraphProto, layer: str, path: Path) -> onnx.NodeProto:
    found = [n for n in graph.node if n.name == layer]
    if not found:
        names = ", ".join(n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul"))
        raise PTQError(f"{path} has no node {layer!r}: its conv/linear layers are {names}")
    return found[0]


def _output_pair(graph: onnx.GraphProto, node: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """The QuantizeLinear/DequantizeLinear pair on ``node``'s output, if it has one."""
    _, consumers = _index(graph)
    for q in consumers.get(node.output[0], []):
        if q.op_type == "QuantizeLinear":
            dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
            if dq is not None:
                return q, dq
    return None


def _dequantized(graph: onnx.GraphProto, tensor: str) -> np.ndarray:
    """The float value of the DequantizeLinear (of an initializer) that yields ``tensor``."""
    producers, _ = _index(graph)
    dq = producers.get(tensor)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
        raise PTQError(f"{tensor!r} is not a dequantized initializer: pass a QDQ model built by quantize_static")
    q, scale = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]].astype(np.float64)
    zp = inits[dq.input[2]].astype(np.float64) if len(dq.input) > 2 else np.zeros_like(scale)
    if scale.size > 1:  # per channel, along the axis attribute (default 1)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q - zp) * scale


def _float_inputs(fp32: onnx.GraphProto, layer: str, path: Path) -> list[np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in fp32.initializer}
    node = _node(fp32, layer, path)
    return [inits[name] for name in node.input[1:] if name in inits]


def _clamps_after(fp32: onnx.GraphProto, layer: str, tensor: str) -> list[onnx.NodeProto]:
    """The FP32 graph's ReLUs from ``layer``'s output to ``tensor`` (none when it is the output); refused when
    the quantizer folded anything else into the output's quantization, which leaving it in float would lose."""
    producers, _ = _index(fp32)
    chain = []
    node = producers.get(tensor)
    while node is not None and node.name != layer and node.op_type in CLAMP_OPS:
        chain.append(node)
        node = producers.get(node.input[0])
    if node is None or node.name != layer:
        found = node.op_type if node is not None else "no node"
        raise PTQError(
            f"cannot leave {layer} in float: between it and its quantized output {tensor!r} the FP32 graph has "
            f"{found}, which only {', '.join(CLAMP_OPS)} may be; blame the cell by rebuilding it instead"
        )
    return list(reversed(chain))


def layer_in_float(qdq_onnx: Path, fp32_pre: Path, layer: str, out: Path) -> None:
    """``qdq_onnx`` with ``layer`` alone in float at ``out``: FP32 weights and bias, no quantization of its output
    (the FP32 graph's ReLU put back where the quantizer had folded it away); every other layer as it was."""
    model, fp32 = onnx.load(str(qdq_onnx)), onnx.load(str(fp32_pre)).graph
    graph = model.graph
    node = _node(graph, layer, qdq_onnx)
    for i, value in enumerate(_float_inputs(fp32, layer, fp32_pre), start=1):
        name = f"{layer}_input{i}_float"
        graph.initializer.append(numpy_helper.from_array(value, name))
        node.input[i] = name
    pair = _output_pair(graph, node)
    if pair is not None:
        q, dq = pair
        tensor, clamps = node.output[0], _clamps_after(fp32, layer, node.output[0])
        if clamps:
            node.output[0] = f"{tensor}_unclamped"
            names = [node.output[0], *(f"{tensor}_clamp{i}" for i in range(len(clamps) - 1)), tensor]
            for c, (src, dst) in zip(clamps, itertools.pairwise(names), strict=True):
                graph.node.append(helper.make_node(c.op_type, [src, *c.input[1:]], [dst], name=f"{layer}_{c.name}"))
        for consumer in graph.node:
            consumer.input[:] = [tensor if name == dq.output[0] else name for name in consumer.input]
        graph.node.remove(q)
        graph.node.remove(dq)
    _drop_unused(graph)
    onnx.checker.check_model(_sorted(model))
    onnx.save(model, str(out))


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove the nodes and initializers nothing reads any more (the layer's weight DequantizeLinears)."""
    while True:
        read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(out in read for out in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {name for n in graph.node for name in n.input}
    for t in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(t)


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph's nodes in topological order (the ReLUs put back were appended at the end)."""
    graph = model.graph
    known = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in known for name in n.input)]
        if not ready:
            raise PTQError(f"graph {graph.name!r} has a cycle or a missing input after leaving a layer in float")
        for n in ready:
            ordered.append(n)
            known.update(n.output)
            pending.remove(n)
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def _calibrated_range(graph: onnx.GraphProto, q: onnx.NodeProto) -> tuple[float, float]:
    inits = {t.name: t for t in graph.initializer}
    scale = float(numpy_helper.to_array(inits[q.input[1]]).max())
    zp_tensor = inits[q.input[2]]
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(zp_tensor.data_type))
    zp = float(numpy_helper.to_array(zp_tensor).max())
    return (info.min - zp) * scale, (info.max - zp) * scale


def float_ranges(fp32_pre: Path, tensors: list[str], images: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min and max of each of ``tensors`` in the (pre-processed) FP32 model on ``images``."""
    import onnxruntime as ort

    if not tensors:
        return {}
    model, name = onnx.load(str(fp32_pre)), input_name(fp32_pre)
    model.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in tensors)
    with tempfile.TemporaryDirectory(prefix="ptq_blame_") as tmp:
        path = Path(tmp) / "fp32_outputs.onnx"
        onnx.save(model, str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        lows, highs = np.full(len(tensors), np.inf), np.full(len(tensors), -np.inf)
        for start in range(0, len(images), BATCH):
            batch = {name: np.ascontiguousarray(images[start : start + BATCH], dtype=np.float32)}
            for i, value in enumerate(session.run(tensors, batch)):
                lows[i], highs[i] = min(lows[i], float(value.min())), max(highs[i], float(value.max()))
    return {t: (float(lo), float(hi)) for t, lo, hi in zip(tensors, lows, highs, strict=True)}


def layer_quantization(qdq_onnx: Path, fp32_pre: Path, layer: str) -> LayerQuantization:
    """The layer's weight SQNR and its output's calibrated range (``float_range`` is filled by the caller)."""
    graph, fp32 = onnx.load(str(qdq_onnx)).graph, onnx.load(str(fp32_pre)).graph
    node = _node(graph, layer, qdq_onnx)
    weight = _float_inputs(fp32, layer, fp32_pre)[0].astype(np.float64)
    error = np.linalg.norm(weight - _dequantized(graph, node.input[1]))
    weight_db = 20 * np.log10(np.linalg.norm(weight) / max(float(error), float(np.finfo(float).eps)))
    pair = _output_pair(graph, node)
    if pair is None:
        return LayerQuantization(None, float(weight_db), None, None)
    return LayerQuantization(node.output[0], float(weight_db), _calibrated_range(graph, pair[0]), None)


def local_sqnr(qdq_onnx: Path, fp32_pre: Path, layers: list[str], images: np.ndarray) -> dict[str, float]:
    """Per layer with a quantized output: the SQNR of that quantization alone, in the QDQ model itself: its
    DequantizeLinear output against its QuantizeLinear input (through the ReLU folded into it). Unlike the end
    to end SQNR it carries no earlier layer's error. ORT's optimizations are off, as in qdq_loss_debug."""
    import onnxruntime as ort

    model, fp32 = onnx.load(str(qdq_onnx)), onnx.load(str(fp32_pre)).graph
    pairs, folded = {}, set()
    for layer in layers:
        node = _node(model.graph, layer, qdq_onnx)
        pair = _output_pair(model.graph, node)
        if pair is not None:
            pairs[layer] = (node.output[0], pair[1].output[0])
            folded |= {layer} if _clamps_after(fp32, layer, node.output[0]) else set()
    names = sorted({t for pair in pairs.values() for t in pair})
    model.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    signal, noise = dict.fromkeys(pairs, 0.0), dict.fromkeys(pairs, 0.0)
    for start in range(0, len(images), BATCH):
        batch = {model.graph.input[0].name: np.ascontiguousarray(images[start : start + BATCH], dtype=np.float32)}
        values = dict(zip(names, session.run(names, batch), strict=True))
        for layer, (before, after) in pairs.items():
            ref = values[before].astype(np.float64)
            ref = np.maximum(ref, 0) if layer in folded else ref
            signal[layer] += float(np.sum(ref**2))
            noise[layer] += float(np.sum((ref - values[after]) ** 2))
    eps = float(np.finfo(float).eps)
    return {k: float(10 * np.log10(max(signal[k], eps) / max(noise[k], eps))) for k in pairs}
