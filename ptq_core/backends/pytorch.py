"""torchao PT2E static quantization, saved as a compact torch.export program (``.pt2``).

export -> prepare_pt2e (X86InductorQuantizer with the cell's specs) -> calibrate -> convert_pt2e -> drop
what the quantized graph no longer uses -> re-export -> save. dtype names are the activation type; the
weights are int8 (x86: U8S8 for uint8, S8S8 for int8). ``ptq tune`` leaves modules in float through the
quantizer's per-module config (``float_layers``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.backends import Backend, BuildInputs, MixedPrecision, Stored
from ptq_core.errors import PTQError

CALIB_BATCH = 50  # moving_average updates once per batch: 200 images = 4 updates
PERCENTILE = 99.99  # percentile calibrator: activation range = [100 - p, p] percentiles of all calibration values
_OBSERVER_EPS = 2**-12  # as in get_default_x86_inductor_quantization_config


WEIGHT_OPS = ("conv2d", "linear")


def op_name(node: Any) -> str:
    """A graph node's op without its namespace and overload: ``conv2d`` for ``aten.conv2d.default``."""
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def layer_name(node: Any) -> str:
    """The module a graph node was traced from, as ``named_modules()`` names it (the quantizer matches these)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else node.name


def weight_nodes(graph_module: Any) -> Iterator[tuple[str, Any]]:
    """(layer name, node) of each conv and linear op of a traced graph."""
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and op_name(node) in WEIGHT_OPS:
            yield layer_name(node), node


def weight_layers(inputs: BuildInputs) -> tuple[str, ...]:
    """The names of the FP32 module's conv and linear layers: what mixed precision may leave in float."""
    import torch

    module = inputs.module()
    names = tuple(n for n, m in module.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    if names or not isinstance(module, torch.fx.GraphModule):
        return names
    # a torch.export archive's module holds no nn.Conv2d, but each node of its graph names the module it came from
    return tuple(dict.fromkeys(name for name, _ in weight_nodes(module)))


BACKEND = Backend(
    name="pytorch",
    source="pt2",
    format="pt2",
    dtypes={"uint8": Stored(("uint8",), "int8"), "int8": Stored(("int8",), "int8")},
    calibrators=("minmax", "histogram", "moving_average", "percentile"),
    granularities=("per_channel", "per_tensor"),
    libraries=("torch", "torchao"),
    # torch.export stores ~70 KB of graph JSON beside the ~80 KB of int8 weights, more than the FP32
    # graph needs (the q/dq nodes): 2.3x measured per-channel, so the file is only >= 2x smaller.
    min_file_ratio=2.0,
    twin=lambda cell: cell.replace(
        backend="onnxruntime",
        dtype={"uint8": "u8s8", "int8": "int8"}[cell.dtype],
        calibrator={"histogram": "entropy", "moving_average": "minmax"}.get(cell.calibrator, cell.calibrator),
    ),
    # ranked on eager torch: no Inductor compile per ranking build
    mixed_precision=MixedPrecision(dtype="uint8", ranking_runtime="torch", layers=weight_layers),
)


@functools.cache
def _observers() -> dict[str, Any]:
    import torch
    from torchao.quantization.pt2e import observer as obs

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

    return {
        "minmax": obs.MinMaxObserver,
        "histogram": obs.HistogramObserver,
        "moving_average": obs.MovingAverageMinMaxObserver,
        "percentile": PercentileObserver,
    }


def build_quantizer(cell: Any, float_layers: tuple[str, ...] = ()) -> Any:
    """The one place a cell becomes a torchao quantizer: X86InductorQuantizer with the cell's specs, and the
    modules named in ``float_layers`` left in float (mixed precision).

    uint8 with histogram/per_channel is exactly ``get_default_x86_inductor_quantization_config()``.
    """
    import torch
    from torchao.quantization.pt2e import observer as obs
    from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    dtype, qmin, qmax = {"uint8": (torch.uint8, 0, 255), "int8": (torch.int8, -128, 127)}[cell.dtype]
    act = QuantizationSpec(
        dtype=dtype,
        quant_min=qmin,
        quant_max=qmax,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=_observers()[cell.calibrator].with_args(eps=_OBSERVER_EPS),
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
    quantizer = X86InductorQuantizer().set_global(QuantizationConfig(act, act, weight, None, is_qat=False))
    for name in float_layers:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def exported(inputs: BuildInputs, cell: Any) -> Any:
    """The FP32 module as torch.export gives it, with a dynamic batch: the graph the quantizer annotates."""
    import torch

    from ptq_core.formats import pt2

    batch = pt2.example_batch(cell.model_spec, 2)
    return torch.export.export(inputs.module().eval(), (batch,), dynamic_shapes=pt2.dynamic_batch()).module()


def calibrated(graph: Any, inputs: BuildInputs, cell: Any, float_layers: tuple[str, ...] = ()) -> Any:
    """``graph`` (``exported``; changed in place) prepared for the cell, its conv-BN pairs folded, and calibrated
    on the images: ``convert_pt2e`` makes it 8-bit."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    prepared = prepare_pt2e(graph, build_quantizer(cell, float_layers))
    images = np.array(inputs.images, dtype=np.float32)  # a writable copy: torch.from_numpy shares its memory
    with torch.no_grad():
        for start in range(0, len(images), CALIB_BATCH):
            prepared(torch.from_numpy(images[start : start + CALIB_BATCH]))
    return prepared


def quantize(inputs: BuildInputs, cell: Any, out: Path, float_layers: tuple[str, ...] = ()) -> None:
    """Quantize the FP32 module statically for ``cell``, calibrated on the images, and save it to ``out``;
    the modules named in ``float_layers`` stay in float."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from ptq_core.formats import pt2

    model = cell.model_spec
    prepared = calibrated(exported(inputs, cell), inputs, cell, float_layers)
    converted = convert_pt2e(prepared)
    _drop_unused_float_weights(converted)
    program = torch.export.export(converted, (pt2.example_batch(model, 2),), dynamic_shapes=pt2.dynamic_batch())
    pt2.save(pt2.compact(program), out)
    found = pt2.inspect(out)
    if found.quantized_weight_ops != found.weight_ops - len(float_layers) or found.weight_ops == 0:
        raise PTQError(
            f"cell {cell.id}: {found.quantized_weight_ops} of {found.weight_ops} conv/linear ops got int8 weights, "
            f"{len(float_layers)} were to stay in float; the quantizer did not match the rest (use plain "
            "nn.Conv2d / nn.Linear, and name layers as model.named_modules() does)"
        )


def _drop_unused_float_weights(converted: Any) -> None:
    """convert_pt2e leaves the float weights registered; observers give int64 zero points (8 B per channel)."""
    import torch

    used = {node.target for node in converted.graph.nodes if node.op == "get_attr"}
    for name, _ in [*converted.named_parameters(), *converted.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(converted.get_submodule(owner), attr)
    dequantize_per_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
    for node in converted.graph.nodes:
        if node.target == dequantize_per_channel and isinstance(node.args[2], torch.fx.Node):
            owner, _, attr = str(node.args[2].target).rpartition(".")
            module = converted.get_submodule(owner)
            module.register_buffer(attr, getattr(module, attr).to(torch.int32))
