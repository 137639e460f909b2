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

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed, Outcome, reason_of
from ptq_core.formats import format_of

Cell = Any  # a ``matrix.Cell``: the matrix reads this registry, so it is not imported here

Predict = Callable[[np.ndarray], np.ndarray]


def worker_threads() -> int:
    """Cores per process, so that pytest-xdist workers together do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // workers)


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
    return _session_predict(onnxruntime_session(path, threads))


def _onnxruntime_sleeping(path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
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


def _openvino(precision: str | None) -> Callable[[Path, int], Predict]:
    def load(path: Path, threads: int) -> Predict:
        compiled = openvino_model(path, threads, precision)
        request = compiled.create_infer_request()

        def predict(images: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: images})[0], copy=True)

        return predict

    return load


def _openvino_bound(precision: str | None) -> Callable[[Path, int, tuple[int, ...]], Predict]:
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


def _openvino_throughput(path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
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


def _inductor(path: Path, threads: int, shape: tuple[int, ...]) -> Predict:
    """torch.compile with freezing (oneDNN int8 kernels), compiled here for ``shape``: one shape per batch size."""
    import torch

    from ptq_core.inductor import compile_for, inductor

    compiled = inductor(path)
    torch.set_num_threads(threads)
    compile_for(compiled, torch.zeros(shape))
    return _module(compiled, threads)


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


def _pixels(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images, dtype=np.uint8)


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
        Runtime("onnxruntime", "onnx", ("onnxruntime",), _onnxruntime, deploy=_onnxruntime_sleeping),
        Runtime("openvino", "onnx", ("openvino",), _openvino("f32"), deploy=_openvino_bound("f32")),
        Runtime(
            "openvino_default", "onnx", ("openvino",), _openvino(None), checked=False, deploy=_openvino_bound(None)
        ),
        Runtime("torch", "pt2", ("torch",), _torch, deploys=False),
        Runtime(
            "openvino_throughput",
            "onnx",
            ("openvino",),
            scored=False,
            deploy=_openvino_throughput,
            applies=lambda batch, threads: batch > 1 and threads > 1,  # streams need a batch and threads to split
        ),
        # the ONNX Runtime cell with its input QuantizeLinear dropped (exact when that maps pixels to themselves)
        Runtime(
            "onnxruntime_uint8_input",
            "onnx",
            ("onnxruntime",),
            scored=False,
            deploy=_onnxruntime_sleeping,
            inputs=_pixels,
            fp32_twin="onnxruntime",
            serves=lambda cell: cell is not None and cell.backend == "onnxruntime",
            artifact=lambda store, cell: uint8_input_model(store, cell),
        ),
        # Inductor's x86 int8 kernels take uint8 activations (tune.UNSERVED)
        Runtime(
            "inductor",
            "pt2",
            ("torch",),
            scored=False,
            deploy=_inductor,
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
    threads = threads or worker_threads()
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
    return _module(obj, threads)
