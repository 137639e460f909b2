"""torch.export archives (``.pt2``): FP32 export, loading, and what a PT2E-quantized program stores.

Archives are ``torch.export.save`` JSON + raw tensor bytes with no example inputs, so loading one
unpickles nothing. A quantized graph calls the ``quantized_decomposed`` q/dq ops; ``load`` registers
them first (a bare ``torch.export.load`` needs ``import torch.ao.quantization.fx._decomposed``).
"""

from __future__ import annotations

import functools
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ptq_core.errors import PTQError
from ptq_core.formats import Inspection

_WEIGHT_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
_SCALAR_QPARAM_BYTES = 8  # a per-tensor scale / zero point is a 64-bit number in the graph JSON
_DEBUG_META = ("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "from_node", "custom")


def _qd() -> Any:
    from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401  (registers the ops)

    return torch.ops.quantized_decomposed


def example_batch(model: Any, n: int = 4) -> torch.Tensor:
    """A fresh tensor in the model's input range (never a view: export would save the whole storage)."""
    low, high = model.input_range
    return torch.rand((n, *model.input_shape), generator=torch.Generator().manual_seed(0)) * (high - low) + low


def dynamic_batch() -> tuple[dict[int, torch.export.Dim]]:
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)


def export_program(module: torch.nn.Module, model: Any) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch dimension (an example batch of 1 would specialise it)."""
    program = torch.export.export(module.eval(), (example_batch(model),), dynamic_shapes=dynamic_batch())
    program.example_inputs = None  # saved, they are a pickle (and 50 KB); quantized programs drop them too
    return program


def export(module: torch.nn.Module, out: Path, model: Any) -> None:
    save(export_program(module, model), out)


def compact(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The program without debug metadata or example inputs (saved inputs are a pickle, and noise)."""
    for node in program.graph.nodes:
        for key in _DEBUG_META:
            node.meta.pop(key, None)
    program.example_inputs = None
    return program


def save(program: torch.export.ExportedProgram, out: Path) -> None:
    with open(out, "wb") as f:  # a file object: the caller's temporary name need not end in .pt2
        torch.export.save(program, f)


def load(path: Path) -> torch.export.ExportedProgram:
    """The archive's program; read once per process while the file is unchanged (callers take
    ``.module()``, a fresh module each time, and never alter the program)."""
    _qd()
    if not Path(path).is_file():
        raise PTQError(f"model file {path} does not exist: build it with `ptq prepare` or `ptq quantize`")
    stat = Path(path).stat()
    return _load(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


# torch.export.load takes ~85 ms per read (its schema's type hints, again each time) and the checks read a cell's
# archive 3-4 times, far apart: room for every archive of the suite (22, a few MB at most each)
@functools.lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int) -> torch.export.ExportedProgram:
    try:
        with open(path, "rb") as f:
            return torch.export.load(f)
    except Exception as exc:  # zip, json and schema errors all mean the same to the user
        raise PTQError(
            f"{path} is not a loadable torch.export archive ({type(exc).__name__}: {str(exc)[:200]}): "
            "delete it and rebuild it (`ptq prepare` / `ptq quantize`)"
        ) from exc


def eager_module(program: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """The program as a module whose activation quantize -> dequantize pairs run in place.

    ``quantized_decomposed`` computes ``clamp(round(x * (1 / s)) + z)``, casts to the 8-bit dtype, casts back and
    computes ``(q - z) * s``: eight passes, each allocating. The same float ops in the same order, in place and
    without the exact integer round trip, give the same bits (checked on every PT2E cell's 10,000 test scores)
    in about two thirds of the time of eager scoring.
    """
    qd = _qd()
    quantize, dequantize = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    module = program.module()
    graph = module.graph
    for node in list(graph.nodes):
        users = list(node.users)
        if node.target != quantize or not users:
            continue
        if any(u.target != dequantize or u.args[1:] != node.args[1:] or u.kwargs for u in users):
            continue
        x, scale, zero_point, quant_min, quant_max, _ = node.args
        for user in users:
            with graph.inserting_before(user):
                fused = graph.call_function(_quantize_dequantize, (x, scale, zero_point, quant_min, quant_max))
            user.replace_all_uses_with(fused)
            graph.erase_node(user)
        graph.erase_node(node)
    module.recompile()
    return module


def _quantize_dequantize(
    x: torch.Tensor, scale: float, zero_point: int, quant_min: int, quant_max: int
) -> torch.Tensor:
    y = x * (1.0 / scale)
    return y.round_().add_(zero_point).clamp_(quant_min, quant_max).sub_(zero_point).mul_(scale)


def _tensors(program: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Graph placeholder name -> the parameter, buffer or constant tensor it stands for."""
    sig = program.graph_signature
    named = {**program.state_dict, **program.constants}
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    return {node: named[target] for node, target in lifted.items()}


def inspect(path: Path) -> Inspection:
    qd = _qd()
    quantize = {qd.quantize_per_tensor.default, qd.quantize_per_tensor.tensor}
    dequantize = {qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor, qd.dequantize_per_channel.default}
    program = load(path)
    tensors = _tensors(program)
    nodes = list(program.graph.nodes)
    weight_ops = [n for n in nodes if n.op == "call_function" and n.target in _WEIGHT_OPS]

    def stored(node: object) -> torch.Tensor | None:
        return tensors.get(node.name) if isinstance(node, torch.fx.Node) else None

    weight_dqs = [
        n.args[1]
        for n in weight_ops
        if isinstance(n.args[1], torch.fx.Node)
        and n.args[1].target in dequantize
        and stored(n.args[1].args[0]) is not None
    ]
    weight_dqs = [dq for dq in weight_dqs if stored(dq.args[0]).dtype in (torch.int8, torch.uint8)]  # type: ignore[union-attr]
    float_weights = [stored(n.args[1]) for n in weight_ops if stored(n.args[1]) is not None]
    activation_q = [n for n in nodes if n.target in quantize]
    return Inspection(
        weight_ops=len(weight_ops),
        quantized_weight_ops=len(weight_dqs),
        activations_quantized=bool(weight_ops)
        and all(isinstance(n.args[0], torch.fx.Node) and n.args[0].target in dequantize for n in weight_ops),
        weight_dtypes=tuple(sorted({_name(stored(dq.args[0]).dtype) for dq in weight_dqs})),  # type: ignore[union-attr]
        activation_dtypes=tuple(sorted({_name(n.args[5]) for n in activation_q})),
        weight_granularities=tuple(
            sorted(
                {"per_channel" if dq.target == qd.dequantize_per_channel.default else "per_tensor" for dq in weight_dqs}
            )
        ),
        payload_bytes=sum(_payload_bytes(dq, tensors) for dq in weight_dqs),
        float_weight_bytes=sum(t.nbytes for t in float_weights if t is not None and t.is_floating_point()),
        file_bytes=Path(path).stat().st_size,
        activation_scales={str(n.args[0]): float(n.args[1]) for n in activation_q if isinstance(n.args[1], float)},
    )


def _name(dtype: object) -> str:
    return str(dtype).removeprefix("torch.")


def _payload_bytes(dequantize: torch.fx.Node, tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the int8 weight plus its scale(s) and zero point(s), tensors or graph scalars."""
    return sum(
        tensors[arg.name].nbytes if isinstance(arg, torch.fx.Node) else _SCALAR_QPARAM_BYTES
        for arg in dequantize.args[:3]
    )


@dataclass(frozen=True)
class ArchiveBytes:
    """Where the bytes of a saved ``torch.export`` archive go (it is an uncompressed zip)."""

    tensors: int  # raw parameter / buffer / constant bytes
    tensor_index_json: int  # per-tensor dtype/shape/stride records
    graph_json: int
    example_inputs: int
    other: int  # version files and zip headers


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
