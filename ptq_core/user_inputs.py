"""A user's classifier read and refused before anything is built: the ONNX file (``read_onnx``, ``select_output``,
``check_weights``, ``check_batch``) and the FP32 model's answers to the images (``num_classes_of``,
``check_fp32_scores``); the images and labels themselves are ``user_data``'s.

Nothing about the model is assumed: its input's shape, layout, dtype and range are whatever the file and the
images say; its scores are the output ``--output`` names (default: its first). What the suite cannot score is
refused with a :class:`PTQError` that names the thing and the fix: the FP32 model must answer a batch of one and
a batch of scoring's size, and its scores on ``--data`` must be finite and better than chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...]  # None: symbolic (any size)

    def describe(self) -> str:
        return (
            f"input {self.name!r} ({self.dtype}, shape ({', '.join('?' if d is None else str(d) for d in self.dims)}))"
        )


def read_onnx(path: Path) -> tuple[InputSpec, str, Any]:
    """The model's one input, its first output's name and the model (external data loaded); PTQError for
    anything but a valid ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.onnx"))
        hint = f" (it holds {', '.join(inside[:3])})" if inside else ""
        raise PTQError(f"--onnx {path} is a directory{hint}: pass the path of your .onnx classifier file")
    if not path.is_file():
        raise PTQError(f"--onnx {path}: no such file: pass the path of your .onnx classifier")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except (DecodeError, ValueError, onnx.checker.ValidationError, OSError) as exc:
        raise PTQError(
            f"--onnx {path} is not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): "
            "export your classifier with torch.onnx.export (or your framework's ONNX exporter) and pass that file"
        ) from exc
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise PTQError(
            f"--onnx {path} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}): ptq run scores "
            "classifiers with one image input"
        )
    tensor = inputs[0].type.tensor_type
    if not tensor.HasField("shape"):
        raise PTQError(f"--onnx {path}: input {inputs[0].name!r} has no declared rank: export it with a static rank")
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    spec = InputSpec(inputs[0].name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims)
    if not spec.dims:
        raise PTQError(
            f"--onnx {path}: {spec.describe()} is a scalar: ptq run scores classifiers of a batch of images, "
            "(N, ...) with a dynamic batch dimension N"
        )
    return spec, proto.graph.output[0].name, proto


def _describe_output(value: Any) -> str:
    """``'logits' (N, 10)``, or ``'seq' (a sequence)`` for what is not a tensor."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"{value.name!r} (a {str(kind or 'value of no type').removesuffix('_type')})"
    shape = value.type.tensor_type.shape
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]
    return f"{value.name!r} ({', '.join(dims)})" if value.type.tensor_type.HasField("shape") else repr(value.name)


def other_outputs(proto: Any, output: str, prefix: str = "--") -> str:
    """How to read the scores from another of the model's outputs (named, with their declared shapes)."""
    others = [_describe_output(o) for o in proto.graph.output if o.name != output]
    if not others:
        return f"the model has no other output for {prefix}output NAME to read"
    return f"pass {prefix}output NAME to read the scores from another of its outputs: {', '.join(others)}"


def select_output(path: Path, proto: Any, output: str | None, prefix: str = "--") -> str:
    """The output that holds the (N, classes) scores: ``output`` when given, else the first; a tensor."""
    outputs = {o.name: o for o in proto.graph.output}
    if output is not None and output not in outputs:
        raise PTQError(
            f"{prefix}output {output!r}: {path} has no such output; its outputs are "
            f"{', '.join(_describe_output(o) for o in proto.graph.output)}: name the one that holds the "
            "(N, classes) scores"
        )
    name = output if output is not None else proto.graph.output[0].name
    value = outputs[name]
    if value.type.WhichOneof("value") != "tensor_type":
        raise PTQError(
            f"--onnx {path}: output {_describe_output(value)} is not a tensor: ptq run reads (N, classes) scores "
            f"from one tensor output. Export the model so that it returns the scores tensor itself, not a list, tuple "
            f"or dict of them ({other_outputs(proto, name, prefix)})"
        )
    return name


def _tensors(graph: Any, where: str = "") -> Any:
    """Every initializer and Constant node value of ``graph`` and its subgraphs: (name, TensorProto)."""
    import onnx

    for tensor in graph.initializer:
        yield f"{where}initializer {tensor.name!r}", tensor
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                yield f"{where}Constant node {node.name or node.output[0]!r}", attr.t
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _tensors(sub, f"{where}{node.op_type} {node.name!r}: ")


FLOAT_TYPES = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def check_weights(path: Path, proto: Any) -> None:
    """Every float weight is finite: the quantizers compute 8-bit scales from the weights' ranges (ONNX Runtime
    asserts "scale issue" on NaN), and a NaN weight makes every FP32 score NaN."""
    from onnx import numpy_helper

    bad = []
    for what, tensor in _tensors(proto.graph):
        if tensor.data_type not in FLOAT_TYPES:
            continue
        values = numpy_helper.to_array(tensor)
        try:
            finite = np.isfinite(values)
        except TypeError:  # a float type numpy's ufuncs do not take (bfloat16)
            finite = np.isfinite(values.astype(np.float32))
        if not finite.all():
            nan = int(np.isnan(values.astype(np.float32)).sum())
            bad.append((what, values.shape, nan, int((~finite).sum()) - nan, int(np.flatnonzero(~finite)[0])))
    if bad:
        what, shape, nan, inf, first = bad[0]
        more = f" (and {len(bad) - 1} more weight tensors)" if len(bad) > 1 else ""
        raise PTQError(
            f"--onnx {path}: {what} {tuple(shape)} holds {nan} NaN and {inf} infinite values (the first at flat index "
            f"{first}){more}: its FP32 scores are not numbers, and a quantizer cannot compute 8-bit scales from it. "
            "Export the model from a checkpoint whose weights are all finite"
        )


EXPORT_BATCH = "torch.onnx.export(net, (x,), path, dynamic_shapes=({0: torch.export.Dim('batch')},))"


def check_batch(path: Path, spec: InputSpec, images: np.ndarray) -> None:
    """The model's input starts with a dynamic batch dimension: calibration and scoring run batches."""
    if spec.dims[0] in (None, -1):
        return
    if images.ndim == len(spec.dims) + 1 and all(
        d in (None, -1) or d == n for d, n in zip(spec.dims, images.shape[1:], strict=True)
    ):
        raise PTQError(
            f"--onnx {path}: {spec.describe()} has no batch dimension: it takes one image of the shape of each of "
            f"the --data images {images.shape[1:]}. Export the model on a batch, x of shape (N, "
            f"{', '.join(map(str, images.shape[1:]))}), with a dynamic batch dimension: {EXPORT_BATCH}"
        )
    raise PTQError(
        f"--onnx {path}: {spec.describe()} has a fixed batch size of {spec.dims[0]}: "
        "calibration and scoring run batches, so export it with a dynamic batch dimension "
        f"(torch.onnx.export(..., dynamic_shapes=...), e.g. {EXPORT_BATCH})"
    )


def num_classes_of(path: Path, spec: InputSpec, output: str, images: np.ndarray, prefix: str = "--") -> int:
    """Run the FP32 model on a batch of two images, of one and of scoring's batch size: ``output`` must be
    (N, classes) scores at every batch size the suite runs (an inner Reshape fixed to the export batch
    size answers the first batch and fails later, inside calibration or scoring)."""
    import onnxruntime as ort

    from ptq_core.adapters import onnxruntime_session
    from ptq_core.eval import BATCH_SIZE
    from ptq_core.evaluation import reason_of

    session = onnxruntime_session(path, 1)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failure is the message below, not also ONNX Runtime's log line
    sizes = list(dict.fromkeys(min(n, len(images)) for n in (2, 1, BATCH_SIZE)))
    classes = None
    for size in sizes:
        batch = images[:size]
        try:
            scores = session.run([output], {spec.name: batch}, quiet)[0]
        except Exception as exc:  # onnxruntime's own error types
            if size == sizes[0]:
                raise PTQError(
                    f"--onnx {path} fails on the images ({reason_of(exc)}): check that they are what its "
                    f"{spec.describe()} takes"
                ) from exc
            raise PTQError(
                f"--onnx {path} answers a batch of {sizes[0]} images but fails on a batch of {size} "
                f"({reason_of(exc)}): calibration and scoring run batches of 1 to {BATCH_SIZE} images, so every "
                "operation must follow the batch dimension: export it with a dynamic batch dimension throughout "
                f"(a Reshape or Expand fixed to the export's batch size does this), e.g. {EXPORT_BATCH}"
            ) from exc
        if not isinstance(scores, np.ndarray) or scores.ndim != 2 or scores.shape[0] != size or scores.shape[1] < 2:
            shape = scores.shape if isinstance(scores, np.ndarray) else f"a {type(scores).__name__}"
            raise PTQError(
                f"--onnx {path}: output {output!r} has shape {shape} for {size} images; ptq run needs "
                "(N, classes) scores (logits or probabilities): end the exported graph with the classifier's scores, "
                f"or pass {prefix}output NAME to read them from another output"
            )
        if classes is not None and scores.shape[1] != classes:
            raise PTQError(
                f"--onnx {path}: output {output!r} has {classes} scores per image for a batch of {sizes[0]} but "
                f"{scores.shape[1]} for a batch of {size}: export it with a dynamic batch dimension throughout"
            )
        classes = int(scores.shape[1])
    assert classes is not None
    return classes


def check_fp32_scores(store: Any, proto: Any, prefix: str = "--") -> None:
    """Score a ``user.UserStore``'s FP32 model on --data once (cached: ``ptq run`` and ``ptq tune`` reuse these
    predictions) and refuse what cannot be a classifier's scores for these labels: a score that is not finite, or
    an accuracy no better than chance. Both mean the wrong output, wrong labels or wrong preprocessing, never a
    result."""
    from ptq_core.evaluation import EvaluationFailed
    from ptq_core.predictions import predictions_on_test

    path, output, classes = store.onnx, store.output, store.model.num_classes
    read = f"output {output!r} of {path.name} ({classes} scores per image)"
    other = other_outputs(proto, output, prefix)
    try:
        predicted = predictions_on_test(store, store.fp32("onnx"), "onnxruntime", store.model.name)
    except EvaluationFailed as exc:
        raise PTQError(
            f"--onnx {path}: {read} on --data {store.data_file}: {exc.reason}. Fix the model or the images that give "
            f"them ({other})"
        ) from exc
    labels = store.data.labels
    correct, total = int((predicted == labels).sum()), len(labels)
    if correct * classes <= total:  # accuracy <= 1 / classes, exactly
        raise PTQError(
            f"--onnx {path}: {read} gets {correct} of the {total} --data images right ({correct / total:.2%}), no "
            f"better than chance for {classes} classes ({1 / classes:.2%}): these are not its scores for these "
            f"labels ({other}). Check that the labels are the model's class indices and that the images are "
            "preprocessed as in its training"
        )
