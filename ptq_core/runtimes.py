"""The runtime registry: what runs an artifact, declared once, each a thin adapter to ``predict(images)``.

The same QDQ file runs differently on different runtimes, so every ONNX artifact is scored on each
runtime that takes ONNX. OpenVINO's CPU plugin picks bf16 inference on CPUs with AVX-512 BF16 unless
told otherwise: ``openvino`` asks for f32 (the exact figure), ``openvino_default`` is what a user gets
without a hint (report only).

A runtime that only deploys (``scored=False``: Inductor, OpenVINO's throughput hint, ONNX Runtime on the uint8
pixels) is timed and validated by ``ptq bench``, ``ptq tune`` and the speed guards, never in the checks, the
matrix or the baselines. What a deployment needs beyond scoring is declared on its entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core import adapters
from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed, Outcome, reason_of
from ptq_core.formats import format_of

Cell = Any  # a ``matrix.Cell``: the matrix reads this registry, so it is not imported here

Predict = Callable[[np.ndarray], np.ndarray]


def _always(*_: object) -> bool:
    return True


@dataclass(frozen=True)
class Runtime:
    name: str
    format: str  # the artifact format it runs
    libraries: tuple[str, ...]  # whose versions key its cached predictions and its baselines
    load: Callable[[Path, int], Predict] | None = None  # (artifact, threads) -> predict(float32 batch) -> scores
    checked: bool = True  # False: reported beside the others, never asserted, never a tune candidate or speed guard
    scored: bool = True  # False: deployed only, never in the checks, the matrix or the baselines
    deploys: bool = True  # False: scored only (eager torch: a reference, never a deployment)
    # (artifact, threads, batch shape) -> run(inputs) as deployed; None: as ``load`` scores
    deploy: Callable[[Path, int, tuple[int, ...]], Predict] | None = None
    inputs: Callable[[np.ndarray], np.ndarray] | None = None  # the images as it takes them; None: the model's dtype
    fp32_twin: str = ""  # the runtime whose FP32 its 8-bit deployments are compared with ("": its own)
    applies: Callable[[int, int], bool] = _always  # (batch, threads) -> whether it is deployed at them
    serves: Callable[[Cell | None], bool] = _always  # whose artifact it deploys: a cell's, or FP32's (None)
    artifact: Callable[[Any, Cell], Path] | None = None  # (store, cell) -> what it deploys of a cell; None: the cell's

    def __post_init__(self) -> None:
        if self.load is None and (self.scored or self.deploy is None):
            raise ValueError(f"runtime {self.name}: give the load that scores it, or scored=False and a deploy")

    def deployment(self, path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
        """``run(inputs) -> scores`` on batches of ``shape`` (its first axis the batch size), as deployed."""
        if self.deploy is not None:
            return self.deploy(path, threads, shape)
        assert self.load is not None  # __post_init__
        return self.load(path, threads)

    def deployed_artifact(self, store: Any, model: str, cell: Cell | None) -> Path | None:
        """The artifact it deploys of ``cell`` (None: FP32 of ``model``), or None where it deploys none."""
        if not self.deploys or not self.serves(cell):
            return None
        if cell is None:
            return store.fp32(self.format, model)
        if cell.backend_spec.format != self.format:
            return None
        return self.artifact(store, cell) if self.artifact is not None else store.quantized(cell)


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(
            "onnxruntime", "onnx", ("onnxruntime",), adapters.onnxruntime_load, deploy=adapters.onnxruntime_sleeping
        ),
        Runtime(
            "openvino", "onnx", ("openvino",), adapters.openvino_load("f32"), deploy=adapters.openvino_bound("f32")
        ),
        Runtime(
            "openvino_default",
            "onnx",
            ("openvino",),
            adapters.openvino_load(None),
            checked=False,
            deploy=adapters.openvino_bound(None),
        ),
        Runtime("torch", "pt2", ("torch",), adapters.torch_load, deploys=False),
        Runtime(
            "openvino_throughput",
            "onnx",
            ("openvino",),
            scored=False,
            deploy=adapters.openvino_throughput,
            applies=lambda batch, threads: batch > 1 and threads > 1,  # streams need a batch and threads to split
        ),
        # the ONNX Runtime cell with its input QuantizeLinear dropped (exact when that maps pixels to themselves)
        Runtime(
            "onnxruntime_uint8_input",
            "onnx",
            ("onnxruntime",),
            scored=False,
            deploy=adapters.onnxruntime_sleeping,
            inputs=adapters.pixels,
            fp32_twin="onnxruntime",
            serves=lambda cell: cell is not None and cell.backend == "onnxruntime",
            artifact=lambda store, cell: adapters.uint8_input_model(store, cell),
        ),
        # Inductor's x86 int8 kernels take uint8 activations (tune.UNSERVED)
        Runtime(
            "inductor",
            "pt2",
            ("torch",),
            scored=False,
            deploy=adapters.inductor_deploy,
            serves=lambda cell: cell is None or cell.dtype == "uint8",
        ),
    )
}


def runtimes_for(fmt: str | None = None, checked_only: bool = False) -> tuple[Runtime, ...]:
    """The runtimes the suite scores (an artifact of ``fmt``; None: any)."""
    return tuple(
        r for r in RUNTIMES.values() if r.scored and fmt in (None, r.format) and (r.checked or not checked_only)
    )


def deploying() -> tuple[Runtime, ...]:
    """The runtimes ``ptq bench`` deploys on, in registry order."""
    return tuple(r for r in RUNTIMES.values() if r.deploys)


def serving(cell: Cell) -> tuple[Runtime, ...]:
    """The runtimes that deploy the cell's own artifact, their accuracy checked: where ``ptq tune`` searches and the
    speed guards watch (at the (batch, threads) each ``applies`` to)."""
    return tuple(
        r
        for r in deploying()
        if r.format == cell.backend_spec.format and r.checked and r.artifact is None and r.serves(cell)
    )


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise PTQError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}") from None


def as_predictor(artifact: Any, model: Any = None, runtime: str | None = None, threads: int | None = None) -> Predict:
    """``predict(images) -> scores`` for a model file (on ``runtime``, default: its format's first) or an
    in-memory ``torch.nn.Module`` / ``ExportedProgram``; images are checked against ``model``'s input."""
    from ptq_core.models import DEFAULT_MODEL, get_model

    spec = model if model is not None else get_model(DEFAULT_MODEL)
    threads = threads or adapters.worker_threads()
    if isinstance(artifact, (str, Path)):
        path = Path(artifact)
        if not path.is_file():
            raise PTQError(f"model file {path} does not exist: build it with `ptq prepare` or `ptq quantize`")
        rt = get_runtime(runtime) if runtime else runtimes_for(format_of(path).name)[0]
        if rt.load is None:
            scored = ", ".join(r.name for r in runtimes_for(rt.format))
            raise PTQError(f"runtime {rt.name} only deploys (ptq bench, ptq tune): score it on {scored}")
        try:
            raw = rt.load(path, threads)
        except Exception as exc:  # the runtime's own error, or ours wrapping it with advice for a user
            cause = exc.__cause__ if isinstance(exc, PTQError) and isinstance(exc.__cause__, Exception) else exc
            raise EvaluationFailed(Outcome.FAILED_TO_LOAD, f"{rt.name}: {reason_of(cause)}") from exc
    else:
        raw = _in_memory(artifact, threads)

    def predict(images: np.ndarray) -> np.ndarray:
        return raw(spec.check_images(images))

    return predict


def _in_memory(obj: Any, threads: int) -> Predict:
    import torch

    if isinstance(obj, torch.export.ExportedProgram):
        obj = obj.module()
    if not isinstance(obj, torch.nn.Module):
        raise PTQError(f"cannot evaluate a {type(obj).__name__}: pass a model file, an ExportedProgram or an nn.Module")
    return adapters.module_predict(obj, threads)
