"""The runtime registry: what runs an artifact, declared once, each a thin adapter to ``predict(images)``.

The same QDQ file runs differently on different runtimes, so every ONNX artifact is scored on each
runtime that takes ONNX. OpenVINO's CPU plugin picks bf16 inference on CPUs with AVX-512 BF16 unless
told otherwise: ``openvino`` asks for f32 (the exact figure), ``openvino_default`` is what a user gets
without a hint (report only).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed, Outcome, reason_of
from ptq_core.formats import format_of

Predict = Callable[[np.ndarray], np.ndarray]


def worker_threads() -> int:
    """Cores per process, so that pytest-xdist workers together do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // workers)


@dataclass(frozen=True)
class Runtime:
    name: str
    format: str  # the artifact format it runs
    libraries: tuple[str, ...]  # whose versions key its cached predictions and its baselines
    load: Callable[[Path, int], Predict]  # (artifact, threads) -> predict(float32 batch) -> scores
    checked: bool = True  # False: reported beside the others, never asserted


def onnxruntime_session(path: Path | str, threads: int | None = None, config: dict[str, str] | None = None) -> Any:
    """A CPU session; ``config``: session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or worker_threads()
    options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise PTQError(
            f"{path}: ONNX Runtime {ort.__version__} cannot load it ({reason_of(exc)}); export it so that this "
            "onnxruntime reads it (its IR version and opset), or pass another .onnx file"
        ) from exc


def _onnxruntime(path: Path, threads: int) -> Predict:
    session = onnxruntime_session(path, threads)
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {name: images})[0]
        return out

    return predict


def openvino_model(path: Path | str, threads: int, precision: str | None) -> Any:
    import openvino as ov

    # one stream and one synchronous request: a batch is never split; no pinning: xdist workers share the CPU
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": False,
    }
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        return ov.Core().compile_model(str(path), "CPU", config)
    except Exception as exc:
        raise PTQError(
            f"{path}: OpenVINO {ov.__version__} cannot compile it at precision {precision or 'default'} "
            f"({reason_of(exc)})"
        ) from exc


def _openvino(precision: str | None) -> Callable[[Path, int], Predict]:
    def load(path: Path, threads: int) -> Predict:
        compiled = openvino_model(path, threads, precision)
        request = compiled.create_infer_request()

        def predict(images: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: images})[0], copy=True)

        return predict

    return load


def _torch(path: Path, threads: int) -> Predict:
    from ptq_core.formats.pt2 import eager_module, load

    return _module(eager_module(load(path)), threads)


def _module(module: Any, threads: int) -> Predict:
    import torch

    def predict(images: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)
        with torch.no_grad():
            out: np.ndarray = module(torch.from_numpy(images)).numpy()
        return out

    return predict


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("onnxruntime", "onnx", ("onnxruntime",), _onnxruntime),
        Runtime("openvino", "onnx", ("openvino",), _openvino("f32")),
        Runtime("openvino_default", "onnx", ("openvino",), _openvino(None), checked=False),
        Runtime("torch", "pt2", ("torch",), _torch),
    )
}


def runtimes_for(fmt: str, checked_only: bool = False) -> tuple[Runtime, ...]:
    return tuple(r for r in RUNTIMES.values() if r.format == fmt and (r.checked or not checked_only))


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
    threads = threads or worker_threads()
    if isinstance(artifact, (str, Path)):
        path = Path(artifact)
        if not path.is_file():
            raise PTQError(f"model file {path} does not exist: build it with `ptq prepare` or `ptq quantize`")
        rt = get_runtime(runtime) if runtime else runtimes_for(format_of(path).name)[0]
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
    return _module(obj, threads)
