"""Thin adapters: any model kind the suite handles becomes ``predict(images) -> probabilities``.

Kinds: an ONNX file or ``InferenceSession``, a ``.pt`` torch.export archive, an ``ExportedProgram``, an
``nn.Module``. Inputs are checked here, once, for every kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError
from ptq_core.resnet8 import INPUT_SHAPE

Predict = Callable[[np.ndarray], np.ndarray]


def worker_threads() -> int:
    """Cores per process, so that pytest-xdist workers together do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // workers)


def check_images(images: np.ndarray) -> np.ndarray:
    """float32 (N, 32, 32, 3) raw pixels; uint8 is converted, anything else is refused."""
    if not isinstance(images, np.ndarray):
        raise PTQError(f"images must be a numpy array of shape (N, 32, 32, 3), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1:] != INPUT_SHAPE:
        raise PTQError(
            f"images must have shape (N, 32, 32, 3) (NHWC, raw pixels 0..255), got {images.shape}"
            + (": transpose NCHW to NHWC" if images.shape[1:2] == (3,) else "")
        )
    if images.dtype not in (np.uint8, np.float32):
        raise PTQError(f"images must be uint8 or float32 raw pixels in [0, 255], got {images.dtype}")
    return np.ascontiguousarray(images, dtype=np.float32)


def onnx_session(path: Path | str, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or worker_threads()
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise PTQError(
            f"{path} is not a loadable ONNX model ({exc.__class__.__name__}: {str(exc)[:200]}); "
            "rebuild it (python -m ptq_core prepare / quantize)"
        ) from exc


def load_torch(path: Path | str) -> Any:
    """A torch.export archive as a callable module (torch.export.load unpickles no code)."""
    from ptq_core.export import load_program

    try:
        return load_program(Path(path)).module()
    except Exception as exc:  # zip, json and schema errors all mean the same to the user
        raise PTQError(
            f"{path} is not a loadable torch.export archive ({exc.__class__.__name__}: "
            f"{str(exc)[:200]}); rebuild it (python -m ptq_core prepare / quantize)"
        ) from exc


def as_predictor(model: Any) -> Predict:
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise PTQError(
                f"model file {path} does not exist: build it with `python -m ptq_core prepare` "
                "or `python -m ptq_core quantize`"
            )
        if path.suffix == ".onnx":
            model = onnx_session(path)
        elif path.suffix in (".pt", ".pt2"):
            model = load_torch(path)
        else:
            raise PTQError(f"model file {path}: unknown kind {path.suffix!r}; use a .onnx or a .pt (torch.export) file")
    if type(model).__name__ == "InferenceSession":
        return _onnx_predictor(model)
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    if isinstance(model, torch.nn.Module):
        return _torch_predictor(model)
    raise PTQError(
        f"cannot evaluate a {type(model).__name__}: pass an ONNX/.pt path, an InferenceSession, "
        "an ExportedProgram or an nn.Module"
    )


def _onnx_predictor(session: Any) -> Predict:
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {name: check_images(images)})[0]
        return out

    return predict


def _torch_predictor(module: Any) -> Predict:
    import torch

    def predict(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(check_images(images))
        torch.set_num_threads(worker_threads())
        with torch.no_grad():
            out: np.ndarray = module(x).numpy()
        return out

    return predict
