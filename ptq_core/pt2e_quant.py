"""Static post-training quantization of ResNet8 with torchao PT2E, saved as a compact torch.export program.

export -> prepare_pt2e (quantizer from the cell) -> calibrate -> convert_pt2e -> drop what the quantized
graph no longer uses -> re-export -> save. The artifact is ``torch.export.save`` JSON + raw tensor bytes
with no example inputs, so loading it unpickles nothing; ``graph_report`` proves every conv/linear is int8.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn
from torchao.quantization.pt2e import observer as obs
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

from ptq_core.errors import PTQError
from ptq_core.export import example_batch, load_program, save_program
from ptq_core.matrix import Cell
from ptq_core.resnet8 import INPUT_SHAPE

CALIB_BATCH = 50  # moving_average updates once per batch: 200 images = 4 updates
PERCENTILE = 99.99  # percentile calibrator: activation range = [100 - p, p] percentiles of all calibration values
_OBSERVER_EPS = 2**-12  # as in get_default_x86_inductor_quantization_config
_ACT_RANGES = {"uint8": (torch.uint8, 0, 255), "int8": (torch.int8, -128, 127)}
_DEBUG_META = ("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "from_node", "custom")
_WEIGHT_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
_QD = torch.ops.quantized_decomposed
_QUANTIZE_ACT = {_QD.quantize_per_tensor.default, _QD.quantize_per_tensor.tensor}
_DEQUANTIZE = {_QD.dequantize_per_tensor.default, _QD.dequantize_per_tensor.tensor, _QD.dequantize_per_channel.default}
_QDQ = _QUANTIZE_ACT | _DEQUANTIZE
_SCALAR_QPARAM_BYTES = 8  # a per-tensor scale / zero point is a 64-bit number in the graph JSON


@dataclass(frozen=True)
class ArchiveBytes:
    """Where the bytes of a saved ``torch.export`` archive go (it is an uncompressed zip)."""

    tensors: int  # raw parameter / buffer / constant bytes
    tensor_index_json: int  # per-tensor dtype/shape/stride records
    graph_json: int
    example_inputs: int
    other: int  # version files and zip headers

    @property
    def total(self) -> int:
        return self.tensors + self.tensor_index_json + self.graph_json + self.example_inputs + self.other


@dataclass(frozen=True)
class PtGraphReport:
    weight_ops: int  # aten conv2d + linear nodes
    quantized_weight_ops: int  # ... whose weight is a dequantize of an int8 tensor
    activation_quantize: int  # quantize_per_tensor nodes (all on activations)
    activation_dequantize: int  # dequantize_per_tensor nodes not feeding a weight
    activations_quantized: bool  # every conv/linear input comes out of a dequantize
    int8_payload_bytes: int  # int8 weights + their scales + zero points
    float_payload_bytes: int  # the same weights as float32
    float_tensors: tuple[tuple[str, int], ...]  # (name, numel) of float tensors other than scales
    archive: ArchiveBytes

    @property
    def payload_ratio(self) -> float:
        return self.float_payload_bytes / self.int8_payload_bytes if self.int8_payload_bytes else 0.0


class PercentileObserver(obs.MinMaxObserver):
    """Range = the [100 - p, p] percentiles of every value seen (exact: values are kept until convert)."""

    def __init__(self, percentile: float = PERCENTILE, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.percentile = percentile
        self._seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._seen.append(x.detach().reshape(-1).to(torch.float32).clone())
        values = torch.cat(self._seen)
        n = values.numel()
        low = min(max(int(np.ceil(n * (100 - self.percentile) / 100)), 1), n)
        high = min(max(int(np.ceil(n * self.percentile / 100)), 1), n)
        self.min_val.copy_(torch.kthvalue(values, low).values)
        self.max_val.copy_(torch.kthvalue(values, high).values)
        return x


_OBSERVERS = {
    "minmax": obs.MinMaxObserver,
    "histogram": obs.HistogramObserver,
    "moving_average": obs.MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
}


def build_quantizer(cell: Cell) -> X86InductorQuantizer:
    """The one place a cell becomes a torchao quantizer: X86InductorQuantizer with the cell's specs.

    uint8 with histogram/per_channel is exactly ``get_default_x86_inductor_quantization_config()``.
    """
    if cell.framework != "pytorch":
        raise PTQError(f"cell {cell.id} is not a pytorch cell: build it with the {cell.framework} builder")
    dtype, qmin, qmax = _ACT_RANGES[cell.dtype]
    act = QuantizationSpec(
        dtype=dtype,
        quant_min=qmin,
        quant_max=qmax,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=_OBSERVERS[cell.calibrator].with_args(eps=_OBSERVER_EPS),
    )
    weight = get_default_x86_inductor_quantization_config().weight
    if cell.granularity == "per_tensor":
        weight = QuantizationSpec(
            dtype=torch.int8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_tensor_symmetric,
            observer_or_fake_quant_ctr=obs.MinMaxObserver.with_args(eps=_OBSERVER_EPS),
        )
    return X86InductorQuantizer().set_global(QuantizationConfig(act, act, weight, None, is_qat=False))


def quantize_pytorch(model: nn.Module, out: Path, cell: Cell, calib_images: np.ndarray) -> None:
    """Quantize ``model`` statically for ``cell``, calibrated on ``calib_images``, and save it to ``out``."""
    _check_images(calib_images)
    if not Path(out).parent.is_dir():
        raise PTQError(f"cannot write {out}: its folder does not exist, create it first")
    quantizer = build_quantizer(cell)
    graph = torch.export.export(model.eval(), (example_batch(2),), dynamic_shapes=_dynamic_batch()).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for start in range(0, len(calib_images), CALIB_BATCH):
            prepared(torch.from_numpy(np.ascontiguousarray(calib_images[start : start + CALIB_BATCH])))
    program = _compact_program(convert_pt2e(prepared))
    report = graph_report(program)
    if report.quantized_weight_ops != report.weight_ops or report.weight_ops == 0:
        raise PTQError(
            f"cell {cell.id}: only {report.quantized_weight_ops} of {report.weight_ops} conv/linear ops "
            "got int8 weights; the quantizer did not match the rest (use plain nn.Conv2d / nn.Linear)"
        )
    save_program(program, out)


def load_quantized(path: Path) -> nn.Module:
    """The saved quantized model as an eager module (quantization simulated in float, q/dq ops kept)."""
    return _load(Path(path)).module()


def graph_report(path_or_program: Path | str | torch.export.ExportedProgram) -> PtGraphReport:
    if isinstance(path_or_program, torch.export.ExportedProgram):
        program, buffer = path_or_program, io.BytesIO()
        torch.export.save(program, buffer)
        archive = archive_bytes(buffer)
    else:
        program = _load(Path(path_or_program))
        with open(path_or_program, "rb") as f:
            archive = archive_bytes(f)
    tensors = _input_tensors(program)
    weight_ops = [n for n in program.graph.nodes if n.op == "call_function" and n.target in _WEIGHT_OPS]
    weight_dqs = [n.args[1] for n in weight_ops if _is_int8_dequantize(n.args[1], tensors)]
    qparam_names = {
        a.name for n in program.graph.nodes if n.target in _QDQ for a in n.args[1:3] if isinstance(a, torch.fx.Node)
    }
    return PtGraphReport(
        weight_ops=len(weight_ops),
        quantized_weight_ops=len(weight_dqs),
        activation_quantize=sum(n.target in _QUANTIZE_ACT for n in program.graph.nodes),
        activation_dequantize=sum(n.target in _DEQUANTIZE for n in program.graph.nodes) - len(weight_dqs),
        activations_quantized=bool(weight_ops)
        and all(isinstance(n.args[0], torch.fx.Node) and n.args[0].target in _DEQUANTIZE for n in weight_ops),
        int8_payload_bytes=sum(_payload_bytes(dq, tensors) for dq in weight_dqs),
        float_payload_bytes=sum(tensors[dq.args[0].name].numel() * 4 for dq in weight_dqs),
        float_tensors=tuple(
            (name, t.numel()) for name, t in tensors.items() if t.is_floating_point() and name not in qparam_names
        ),
        archive=archive,
    )


def _compact_program(converted: torch.fx.GraphModule) -> torch.export.ExportedProgram:
    """Re-export without the float weights convert_pt2e leaves registered, debug metadata or example inputs."""
    used = {node.target for node in converted.graph.nodes if node.op == "get_attr"}
    for name, _ in [*converted.named_parameters(), *converted.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(converted.get_submodule(owner), attr)
    for node in converted.graph.nodes:  # observers give int64 zero points: 8 bytes per channel for a 0
        if node.target == _QD.dequantize_per_channel.default and isinstance(node.args[2], torch.fx.Node):
            owner, _, attr = str(node.args[2].target).rpartition(".")
            module = converted.get_submodule(owner)
            module.register_buffer(attr, getattr(module, attr).to(torch.int32))
    program = torch.export.export(converted, (example_batch(2),), dynamic_shapes=_dynamic_batch())
    for node in program.graph.nodes:
        for key in _DEBUG_META:
            node.meta.pop(key, None)
    program.example_inputs = None  # saved inputs are a pickle, and 24 KB of noise
    return program


def _dynamic_batch() -> tuple[dict[int, torch.export.Dim]]:
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)


def _check_images(images: np.ndarray) -> None:
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.float32
        or images.shape[1:] != INPUT_SHAPE
        or len(images) == 0
    ):
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise PTQError(
            f"calibration images must be float32 (N>0, 32, 32, 3) raw pixels, got {desc}: "
            "pass calibration_set(...).images"
        )


def _load(path: Path) -> torch.export.ExportedProgram:
    if not path.is_file():
        raise PTQError(f"quantized model {path} is missing: build it with quantize_pytorch(...)")
    try:
        return load_program(path)
    except Exception as exc:  # a truncated or foreign zip raises nearly anything
        raise PTQError(
            f"{path} is not a loadable torch.export archive ({type(exc).__name__}: {exc}): "
            "delete it and rebuild with quantize_pytorch(...)"
        ) from exc


def _input_tensors(program: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Graph placeholder name -> the parameter, buffer or constant tensor it stands for."""
    sig = program.graph_signature
    named = {**program.state_dict, **program.constants}
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    return {node: named[target] for node, target in lifted.items()}


def _is_int8_dequantize(node: object, tensors: dict[str, torch.Tensor]) -> bool:
    return (
        isinstance(node, torch.fx.Node)
        and node.target in _DEQUANTIZE
        and isinstance(node.args[0], torch.fx.Node)
        and node.args[0].name in tensors
        and tensors[node.args[0].name].dtype == torch.int8
    )


def _payload_bytes(dequantize: torch.fx.Node, tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the int8 weight plus its scale(s) and zero point(s), tensors or graph scalars."""
    return sum(
        tensors[arg.name].nbytes if isinstance(arg, torch.fx.Node) else _SCALAR_QPARAM_BYTES
        for arg in dequantize.args[:3]
    )


def archive_bytes(file: BinaryIO) -> ArchiveBytes:
    file.seek(0, io.SEEK_END)
    size = file.tell()
    sizes = {"tensors": 0, "tensor_index_json": 0, "graph_json": 0, "example_inputs": 0}
    with zipfile.ZipFile(file) as archive:
        for member in archive.infolist():
            name = member.filename
            if "/sample_inputs/" in name:
                kind = "example_inputs"
            elif "/models/" in name and name.endswith(".json"):
                kind = "graph_json"
            elif "/data/weights/" in name or "/data/constants/" in name:
                kind = "tensor_index_json" if name.endswith(".json") else "tensors"
            else:
                continue
            sizes[kind] += member.file_size
    return ArchiveBytes(**sizes, other=size - sum(sizes.values()))


def activation_scales(path: Path) -> dict[str, float]:
    """Activation name -> scale of its quantize node (scalars in the graph after convert_pt2e)."""
    program = _load(Path(path))
    return {
        str(n.args[0]): float(n.args[1])
        for n in program.graph.nodes
        if n.target in _QUANTIZE_ACT and isinstance(n.args[1], float)
    }
