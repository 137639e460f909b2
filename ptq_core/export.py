"""FP32 artifacts: ResNet8 as a torch.export program (.pt) and as a clean, static ONNX graph (.onnx)."""

from __future__ import annotations

from pathlib import Path

import torch

from ptq_core.resnet8 import INPUT_SHAPE

ONNX_OPSET = 20
INPUT_NAME, OUTPUT_NAME = "input", "probs"


def example_batch(n: int = 4) -> torch.Tensor:
    """A fresh tensor (never a view of a larger batch: export would save the whole storage)."""
    return torch.rand((n, *INPUT_SHAPE), generator=torch.Generator().manual_seed(0)) * 255


def export_program(model: torch.nn.Module) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch dimension (an example batch of 1 would specialise it)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model.eval(), (example_batch(),), dynamic_shapes=({0: batch},))
    program.example_inputs = None  # saved, they are a pickle (and 50 KB); quantized programs drop them too
    return program


def save_program(program: torch.export.ExportedProgram, out: Path) -> None:
    with open(out, "wb") as f:  # a file object: torch.export warns about any name not ending in .pt2
        torch.export.save(program, f)


def load_program(path: Path) -> torch.export.ExportedProgram:
    from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401  (8-bit graphs' q/dq ops)

    with open(path, "rb") as f:
        return torch.export.load(f)


def export_onnx(model: torch.nn.Module, out: Path) -> None:
    """ONNX with BN folded, 'same' pads as Conv attributes, no shape subgraphs, input (N, 32, 32, 3)."""
    import onnx

    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        model.eval(),
        (example_batch(),),
        dynamo=True,
        optimize=True,
        opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    assert program is not None  # dynamo=True always returns a program
    proto = program.model_proto
    _strip_metadata(proto)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))


def _strip_metadata(proto) -> None:  # type: ignore[no-untyped-def]
    """Drop the exporter's per-node provenance: it is most of the file beyond the weights."""
    graph = proto.graph
    for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del item.metadata_props[:]
        item.doc_string = ""
    del graph.value_info[:]
    del proto.metadata_props[:]
    graph.name = "resnet8"
