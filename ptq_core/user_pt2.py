"""A user's PyTorch classifier as a ``torch.export`` archive (``ptq run --model FILE.pt2``): refused before any work
unless it takes one tensor with a dynamic batch, then exported to ONNX once (``torch.onnx.export`` of the program,
cached) for the backends that quantize ONNX files; the PT2E backend quantizes the program itself."""

from __future__ import annotations

import contextlib
import io
import zipfile
from pathlib import Path
from typing import Any

from ptq_core.errors import PTQError

SAVE = (
    'torch.export.save(torch.export.export(net.eval(), (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), '
    '"net.pt2")'
)


def is_pt2(path: Path) -> bool:
    return path.suffix == ".pt2"


def read_pt2(path: Path, option: str = "--model") -> Any:
    """The archive's ExportedProgram, refused (exit 2, naming the fix) unless it is a torch.export archive whose
    program takes one tensor with a dynamic batch dimension."""
    import torch
    from torch.export.graph_signature import InputKind

    if not path.is_file():
        raise PTQError(f"{option} {path}: no such file: save the classifier with {SAVE}")
    if not zipfile.is_zipfile(path):
        raise PTQError(f"{option} {path} is not a torch.export archive (not a zip file): save it with {SAVE}")
    try:
        program = torch.export.load(path)
    except Exception as exc:  # torch's own archive and deserialisation errors share no base below Exception
        from ptq_core.evaluation import reason_of

        raise PTQError(
            f"{option} {path} is not a torch.export archive torch {torch.__version__} reads ({reason_of(exc)}): "
            f"save it with {SAVE}"
        ) from exc
    inputs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    names = [getattr(s.arg, "name", None) for s in inputs]
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    if len(inputs) != 1 or not isinstance(values.get(names[0]), torch.Tensor):
        raise PTQError(
            f"{option} {path}: the program takes {len(inputs)} inputs ({', '.join(map(str, names)) or 'none'}); "
            f"ptq run feeds one tensor of images: export a module whose forward takes the batch alone ({SAVE})"
        )
    batch = values[names[0]].shape[0]
    if not isinstance(batch, torch.SymInt):
        raise PTQError(
            f"{option} {path}: the program's input has a fixed batch of {batch} (shape "
            f"{tuple(values[names[0]].shape)}); calibration and scoring run batches: export it with a dynamic batch "
            f"dimension, {SAVE}"
        )
    return program


def export_onnx(pt2: Path, dest: Path) -> None:
    """The program as an ONNX model (the dynamo exporter; its progress lines are not the run's)."""
    import torch

    from ptq_core.formats.pt2 import load

    with contextlib.redirect_stdout(io.StringIO()):
        onnx_program = torch.onnx.export(load(pt2), (), dynamo=True, verbose=False)
    onnx_program.save(str(dest))
