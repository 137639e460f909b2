"""What a quantized artifact really holds, in the same terms for both frameworks.

Accuracy cannot prove a model is quantized, nor file size that it is 8-bit: this reads the graph
(every Conv/Gemm/Linear fed by a dequantize of an 8-bit tensor) and the stored dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QuantSummary:
    weight_ops: int  # Conv/Gemm (ONNX) or conv2d/linear (PT2E) nodes
    quantized_weight_ops: int  # ... whose weight is a dequantize of a stored 8-bit tensor
    activations_quantized: bool  # every such op reads a dequantized activation
    weight_dtypes: tuple[str, ...]
    payload_bytes: int  # 8-bit weights with their scales and zero points
    float_payload_bytes: int  # the same weights in FP32
    file_bytes: int
    output_step: float  # quantization step of the probabilities the model returns (0: float output)

    @property
    def payload_ratio(self) -> float:
        return self.float_payload_bytes / self.payload_bytes if self.payload_bytes else 0.0


def summarize(path: Path, fp32_path: Path) -> QuantSummary:
    """The quantized artifact at ``path`` (.onnx or .pt) against the FP32 model it came from."""
    path = Path(path)
    if path.suffix == ".onnx":
        from ptq_core.ort_quant import graph_report

        ort = graph_report(path)
        return QuantSummary(
            ort.weight_nodes,
            ort.quantized_weight_nodes,
            ort.activations_quantized,
            ort.weight_dtypes,
            ort.weight_payload_bytes,
            graph_report(fp32_path).float_weight_bytes,
            ort.file_bytes,
            _onnx_output_step(path),
        )
    from ptq_core.pt2e_quant import graph_report as pt_report

    pt = pt_report(path)
    return QuantSummary(
        pt.weight_ops,
        pt.quantized_weight_ops,
        pt.activations_quantized,
        ("int8",) if pt.quantized_weight_ops else (),
        pt.int8_payload_bytes,
        pt.float_payload_bytes,
        path.stat().st_size,
        0.0,
    )


def _onnx_output_step(path: Path) -> float:
    """The scale of the DequantizeLinear that yields the graph output (QDQ quantizes the softmax too)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    producer = next((n for n in graph.node if graph.output[0].name in n.output), None)
    if producer is None or producer.op_type != "DequantizeLinear":
        return 0.0
    scale = next(t for t in graph.initializer if t.name == producer.input[1])
    return float(numpy_helper.to_array(scale).max())


def activation_scales(path: Path) -> dict[str, float]:
    """Quantized activation -> the scale its calibrator chose (what differs between calibrators)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(path)).graph
        inits = {t.name: t for t in graph.initializer}
        return {
            n.input[0]: float(numpy_helper.to_array(inits[n.input[1]]).max())
            for n in graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits
        }
    from ptq_core.pt2e_quant import activation_scales as pt_scales

    return pt_scales(path)
