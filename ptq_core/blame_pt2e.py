"""One layer of a PT2E cell, seen against the FP32 graph: the SQNR of its 8-bit output (end to end, and its
output quantization alone), of its weights, and the range the calibrator chose for its output against FP32's.

The cell is calibrated again in memory (``backends.pytorch.calibrated``: the same images and observers give the
artifact's scales), so torchao's numeric debugger can follow each node back to the FP32 graph it came from
(``prepare_for_propagation_comparison``, ``compare_results``). The quantizer folds each batch norm into its conv,
so a layer is compared where its output is quantized: after the ReLU or the residual add the x86 quantizer fuses
into it, which the FP32 graph computes too; a conv compared before its batch norm would measure the folding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptq_core.backends import BuildInputs
from ptq_core.backends.pytorch import calibrated, exported, op_name, weight_nodes

BATCH = 64  # the debugger's loggers hold every node's output of a batch, for both graphs
FUSED_OPS = ("relu", "add")  # what X86InductorQuantizer fuses between a conv and its output quantization


@dataclass(frozen=True)
class LayerFacts:
    output_node: str | None  # the node whose output is quantized (None: the layer's output stays float)
    output_sqnr_db: float | None  # that node's output against FP32's, end to end
    local_sqnr_db: float | None  # its output quantization alone: quantize-dequantize of its own output
    weight_sqnr_db: float  # the folded float weights against the int8 ones dequantized
    calibrated_range: tuple[float, float] | None
    float_range: tuple[float, float] | None  # what FP32's output reaches on the images


def _attr(graph_module: Any, node: Any) -> Any:
    """The tensor behind ``node``: a get_attr, or the value an observer or a dequantize op makes of one."""
    import torch

    if node.op == "get_attr":
        owner, _, name = str(node.target).rpartition(".")
        return getattr(graph_module.get_submodule(owner), name)
    if node.op == "call_module":  # a weight observer passes its input through
        return _attr(graph_module, node.args[0])
    args = [_attr(graph_module, a) if isinstance(a, torch.fx.Node) else a for a in node.args]
    return node.target(*args)


def _output_quantization(node: Any) -> Any | None:
    """The quantize node on the output of ``node``'s fused chain (conv, then ReLU / add), if any."""
    while True:
        quant = [u for u in node.users if op_name(u) == "quantize_per_tensor"]
        if quant:
            return quant[0]
        fused = [u for u in node.users if op_name(u) in FUSED_OPS]
        if len(fused) != 1:
            return None
        node = fused[0]


def _sqnr(signal: float, noise: float) -> float:
    eps = float(np.finfo(float).eps)
    return float(10 * np.log10(max(signal, eps) / max(noise, eps)))


def _clear(logged: Any) -> None:
    for _, module in logged.named_children():
        if hasattr(module, "stats") and hasattr(module, "debug_info"):
            module.stats.clear()


def layer_facts(inputs: BuildInputs, cell: Any, layers: list[str], images: np.ndarray) -> dict[str, LayerFacts]:
    """Per layer (as the backend names them): its output and weight SQNR and its output's ranges on ``images``."""
    import torch
    from torchao.quantization.pt2e import compare_results, extract_results_from_loggers
    from torchao.quantization.pt2e import prepare_for_propagation_comparison as with_loggers
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    fp32 = exported(inputs, cell)
    reference = with_loggers(fp32)  # a copy: calibrated() folds the batch norms of fp32 in place
    prepared = calibrated(fp32, inputs, cell)
    float_weights = {name: _attr(prepared, node.args[1]).detach().double() for name, node in weight_nodes(prepared)}
    converted = convert_pt2e(copy.deepcopy(prepared))
    quantized = with_loggers(converted)
    found = {name: node for name, node in weight_nodes(converted) if name in layers}
    outputs = {name: _output_quantization(node) for name, node in found.items()}
    watched = {q.args[0].name: (name, q) for name, q in outputs.items() if q is not None}
    signal, noise, local_signal, local_noise = (dict.fromkeys(watched, 0.0) for _ in range(4))
    lows, highs = dict.fromkeys(watched, np.inf), dict.fromkeys(watched, -np.inf)
    for start in range(0, len(images), BATCH):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + BATCH], dtype=np.float32))
        with torch.no_grad():
            reference(x)
            quantized(x)
        compared = compare_results(extract_results_from_loggers(reference), extract_results_from_loggers(quantized))
        for summary in compared.values():
            if summary.actual_node_name not in watched:
                continue
            node_name, (_, quant) = summary.actual_node_name, watched[summary.actual_node_name]
            ref, actual = summary.results[0].ref.double(), summary.results[0].actual.float()
            requantized = torch.ops.quantized_decomposed.dequantize_per_tensor(
                quant.target(actual, *quant.args[1:]), *quant.args[1:]
            ).double()
            signal[node_name] += float((ref**2).sum())
            noise[node_name] += float(((ref - requantized) ** 2).sum())
            local_signal[node_name] += float((actual.double() ** 2).sum())
            local_noise[node_name] += float(((actual.double() - requantized) ** 2).sum())
            lows[node_name] = min(lows[node_name], float(ref.min()))
            highs[node_name] = max(highs[node_name], float(ref.max()))
        _clear(reference)
        _clear(quantized)
    facts = {}
    for name, node in found.items():
        weight = float_weights[name]
        error = float(torch.linalg.vector_norm(weight - _attr(converted, node.args[1]).double()))
        weight_db = 20 * np.log10(float(torch.linalg.vector_norm(weight)) / max(error, float(np.finfo(float).eps)))
        quant = outputs[name]
        if quant is None:
            facts[name] = LayerFacts(None, None, None, float(weight_db), None, None)
            continue
        out = quant.args[0].name
        scale, zero_point, qmin, qmax = (float(a) for a in quant.args[1:5])
        facts[name] = LayerFacts(
            out,
            _sqnr(signal[out], noise[out]),
            _sqnr(local_signal[out], local_noise[out]),
            float(weight_db),
            ((qmin - zero_point) * scale, (qmax - zero_point) * scale),
            (lows[out], highs[out]) if np.isfinite(lows[out]) else None,
        )
    return facts
