"""Per-tensor error analysis of a QDQ model: the SQNR of every quantized activation against the FP32 model."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, quant_pre_process
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)

from ptq_core.errors import PTQError

BATCH = 64
MAX_IMAGES = 1024  # every activation of every image is held in memory: ~2.3 MB an image, both models


@dataclass(frozen=True)
class TensorSQNR:
    tensor: str  # the activation's name in the (pre-processed) FP32 graph
    op_type: str | None  # op of the FP32 node producing it (None: a graph input)
    sqnr_db: float  # 20 log10(|fp32| / |fp32 - dequantized|) over all images; identical tensors give ~300+ dB


class _Batches(CalibrationDataReader):
    def __init__(self, name: str, images: np.ndarray) -> None:
        self._name = name
        self._it: Iterator[np.ndarray] = iter(np.split(images, range(BATCH, len(images), BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self._name: batch}


def _check(fp32_onnx: Path, qdq_onnx: Path, images: np.ndarray) -> tuple[str, np.ndarray]:
    """The FP32 model's input name, and ``images`` checked against its input as float32."""
    for what, path in (("FP32", fp32_onnx), ("QDQ", qdq_onnx)):
        if not Path(path).is_file():
            raise PTQError(f"{what} ONNX model {path} not found: pass ws.fp32('onnx') and ws.quantized(cell)")
    graph_input = onnx.load(str(fp32_onnx), load_external_data=False).graph.input[0]
    dims = tuple(d.dim_value or None for d in graph_input.type.tensor_type.shape.dim)[1:]
    images = np.asarray(images)
    fits = images.ndim == len(dims) + 1 and all(d in (None, n) for d, n in zip(dims, images.shape[1:], strict=True))
    if not fits or not 1 <= len(images) <= MAX_IMAGES:
        shape = ", ".join(["N", *(str(d or "?") for d in dims)])
        raise PTQError(
            f"images must be ({shape}) as {fp32_onnx.name}'s input {graph_input.name!r} takes them, with "
            f"1 <= N <= {MAX_IMAGES}, got {images.shape}: pass a few hundred test images, e.g. "
            "ws.split('test').images[:256]"
        )
    if not np.isfinite(images).all():
        raise PTQError("images must be finite: pass images as the model's input takes them, ws.split('test').images")
    return graph_input.name, np.ascontiguousarray(images, dtype=np.float32)


def _activations(model: Path, name: str, images: np.ndarray, workdir: Path) -> dict[str, list[np.ndarray]]:
    """Every float tensor of ``model`` on ``images``: name -> one flattened array a batch."""
    augmented = workdir / f"{model.stem}_augmented.onnx"
    # ORT writes <model>-inferred.onnx beside the model and deletes it: not in the shared cache, where another
    # process computing the same table loses it (a cold pytest -n 2 run: FileNotFoundError in 4 sqnr tests)
    local = model if model.parent == workdir else workdir / model.name
    if local != model:
        shutil.copyfile(model, local)
    try:
        modify_model_output_intermediate_tensors(str(local), str(augmented))
        acts: dict[str, list[np.ndarray]] = collect_activations(str(augmented), _Batches(name, images))
    except Exception as e:  # protobuf, onnx and ORT's own exception types share no base below Exception
        raise PTQError(f"cannot run ONNX model {model} ({e}): rebuild it (ptq prepare / quantize)") from e
    return acts


def activation_sqnr(fp32_onnx: Path, qdq_onnx: Path, images: np.ndarray) -> list[TensorSQNR]:
    """SQNR of each activation the QDQ model quantizes (its DequantizeLinear output), and of the scores it
    returns, against the FP32 model's tensor of the same name, both run on ``images``; in the FP32 graph's
    order. The error is end to end: it includes what every earlier layer lost. ORT's graph optimisations are
    off, as in qdq_loss_debug."""
    name, pixels = _check(Path(fp32_onnx), Path(qdq_onnx), images)
    with tempfile.TemporaryDirectory(prefix="ptq_sqnr_") as tmp:
        # quantize_onnx quantized a pre-processed copy; the same pre-processing gives the same tensor names
        pre = Path(tmp) / "fp32_pre.onnx"
        try:
            quant_pre_process(str(fp32_onnx), str(pre))
        except Exception as e:  # shape inference and ORT's optimizer raise anything
            raise PTQError(f"cannot pre-process FP32 model {fp32_onnx} ({e}): pass ws.fp32_onnx()") from e
        graph = onnx.load(str(pre)).graph
        float_acts = _activations(pre, name, pixels, Path(tmp))
        qdq_acts = _activations(Path(qdq_onnx), name, pixels, Path(tmp))
        matching = create_activation_matching(qdq_acts, float_acts)
    if not matching:
        raise PTQError(
            f"{qdq_onnx} has no QuantizeLinear/DequantizeLinear activation pairs: "
            "pass a QDQ model, e.g. ws.quantized(Cell('onnxruntime', 'u8s8'))"
        )
    unmatched = sorted(name for name, match in matching.items() if "float" not in match)
    if unmatched:
        raise PTQError(
            f"{len(unmatched)} quantized activations of {qdq_onnx} are not in FP32 model {fp32_onnx} "
            f"(e.g. {unmatched[:3]}): pass the FP32 model the QDQ model was quantized from"
        )
    errors = compute_activation_error(matching)
    producers = {out: (i, node.op_type) for i, node in enumerate(graph.node) for out in node.output}
    rows = [
        TensorSQNR(name, producers.get(name, (-1, None))[1], float(err["xmodel_err"])) for name, err in errors.items()
    ]
    for out in (o.name for o in graph.output if o.name not in errors):  # scores the QDQ model leaves in float
        ref, got = (np.concatenate(acts[out]).astype(np.float64) for acts in (float_acts, qdq_acts))
        rows.append(TensorSQNR(out, producers[out][1], 20 * np.log10(np.linalg.norm(ref) / np.linalg.norm(ref - got))))
    return sorted(rows, key=lambda r: (producers.get(r.tensor, (-1, None))[0], r.tensor))


def format_table(rows: Sequence[TensorSQNR]) -> str:
    """A markdown table of ``rows`` in their order, the lowest-SQNR tensor marked ``<-- worst``."""
    if not rows:
        raise PTQError("no SQNR rows to format: pass the list activation_sqnr returned")
    worst = min(rows, key=lambda r: r.sqnr_db)
    w = max(len("tensor"), *(len(r.tensor) for r in rows))
    lines = [
        f"| {'tensor':<{w}} | {'op':<11} | SQNR (dB) |           |",
        f"|{'-' * (w + 2)}|{'-' * 13}|----------:|-----------|",
    ]
    for r in rows:
        mark = "<-- worst" if r is worst else ""
        lines.append(f"| {r.tensor:<{w}} | {r.op_type or '(input)':<11} | {r.sqnr_db:9.2f} | {mark:<9} |")
    return "\n".join(lines)
