"""Thin adapters from a model file to ``predict(images) -> scores``, one per runtime library: ONNX Runtime sessions,
OpenVINO compiled models (bound input, throughput queue), eager torch and Inductor. ``runtimes`` declares which
runtime uses which; this module decides how a file is run, so it keys every cached prediction."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError
from ptq_core.evaluation import reason_of

Predict = Callable[[np.ndarray], np.ndarray]
Cell = Any  # a ``matrix.Cell``


def worker_threads() -> int:
    """Cores per process, so that pytest-xdist workers together do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // workers)


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


def onnxruntime_load(path: Path, threads: int) -> Predict:
    return _session_predict(onnxruntime_session(path, threads))


def onnxruntime_sleeping(path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
    """Idle threads sleep: spinning ones left by one deployment take the cores of the one timed next."""
    return _session_predict(onnxruntime_session(path, threads, {"session.intra_op.allow_spinning": "0"}))


def _session_predict(session: Any) -> Predict:
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


def openvino_load(precision: str | None) -> Callable[[Path, int], Predict]:
    def load(path: Path, threads: int) -> Predict:
        compiled = openvino_model(path, threads, precision)
        request = compiled.create_infer_request()

        def predict(images: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: images})[0], copy=True)

        return predict

    return load


def openvino_bound(precision: str | None) -> Callable[[Path, int, tuple[int, ...]], Predict]:
    """OpenVINO's zero-copy input: a tensor sharing a buffer the batch is copied into, then a bare ``infer()``.
    ``request.infer({0: x})`` costs ~20 us more per call (92 against 73 us for NNCF's cell at batch 1)."""

    def deploy(path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
        import openvino as ov

        request = openvino_model(path, threads, precision).create_infer_request()
        buffer = np.zeros(shape, np.float32)
        request.set_input_tensor(ov.Tensor(buffer, shared_memory=True))

        def run(x: np.ndarray) -> np.ndarray:
            if x.shape != buffer.shape:  # another batch size: the plain call
                return np.array(request.infer({0: x})[0], copy=True)
            np.copyto(buffer, x)
            request.infer()
            return np.array(request.get_output_tensor(0).data, copy=True)

        return run

    return deploy


def openvino_throughput(path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
    """OpenVINO's throughput hint: one stream per thread, the batch split across them."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path),
        "CPU",
        {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": threads,
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": False,
        },
    )
    streams = int(compiled.get_property("NUM_STREAMS"))
    queue = ov.AsyncInferQueue(compiled, streams)
    outs: dict[int, np.ndarray] = {}

    def done(request: Any, i: int) -> None:
        outs[i] = np.array(request.get_output_tensor(0).data, copy=True)

    queue.set_callback(done)

    def run(x: np.ndarray) -> np.ndarray:
        parts = np.array_split(x, streams)
        for i, part in enumerate(parts):
            queue.start_async({0: part}, i)
        queue.wait_all()
        return np.concatenate([outs[i] for i in range(len(parts))])

    return run


def inductor_deploy(path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
    """torch.compile with freezing (oneDNN int8 kernels), compiled here for ``shape``: one shape per batch size."""
    import torch

    from ptq_core.inductor import compile_for, inductor

    compiled = inductor(path)
    torch.set_num_threads(threads)
    compile_for(compiled, torch.zeros(shape))
    return module_predict(compiled, threads)


def uint8_input_model(store: Any, cell: Cell) -> Path:
    """The cell's QDQ model taking uint8 pixels (``formats.onnx.uint8_input``), built once beside its artifacts."""
    from ptq_core import cache, sources
    from ptq_core.formats.onnx import uint8_input

    qdq = store.quantized(cell)
    key = {
        "qdq_sha256": sources.file_digest(qdq),
        "code": cache.code_digest(("formats/onnx",)),
        "versions": cache.library_versions(("onnx",)),
    }
    out = store.models_dir / "deploy" / f"{cell.id}-uint8-input.onnx"
    return cache.build_once(out, key, lambda tmp: uint8_input(qdq, tmp))


def pixels(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images, dtype=np.uint8)


def torch_load(path: Path, threads: int) -> Predict:
    from ptq_core.formats.pt2 import eager_module, load

    return module_predict(eager_module(load(path)), threads)


def module_predict(module: Any, threads: int) -> Predict:
    import torch

    def predict(images: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)
        with torch.no_grad():
            out: np.ndarray = module(torch.from_numpy(images)).numpy()
        return out

    return predict
