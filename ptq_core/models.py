"""The model registry: every FP32 classifier the suite quantizes, declared once.

An entry says what the model takes (layout, dtype, value range), what it answers (number of classes),
which data set scores it, and how its FP32 PyTorch module is built. The reference accuracy is pinned in
exactly one test (``tests/test_fp32.py``); everything else compares with the *measured* FP32 result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.errors import PTQError


@dataclass(frozen=True)
class Model:
    name: str
    dataset: str  # the split loader's name: "cifar10"
    input_shape: tuple[int, ...]  # one image, in the model's own layout
    layout: str  # "NHWC" or "NCHW"
    input_range: tuple[float, float]  # values the model was trained on (raw pixels: 0..255)
    num_classes: int
    reference_correct: int  # on the full test split; read by tests/test_fp32.py only
    module: str  # the ptq_core module that defines it (its source keys every artifact built from it)
    build: Callable[[Path | None], Any]  # (its located weights file) -> the FP32 torch.nn.Module in eval mode
    weights_sha256: Callable[[], str]  # digest of the weights it is built from
    weights: str | None = None  # the located source file that holds its weights ("resnet8_h5"); None: packaged
    input_dtype: str = "float32"  # what its input takes ...
    accepts: tuple[str, ...] = ("uint8", "float32")  # ... and what it converts to that

    def check_images(self, images: Any) -> np.ndarray:
        """The images as the float32 batch this model takes; a clear error for anything else."""
        shape = ", ".join(map(str, self.input_shape))
        if not isinstance(images, np.ndarray):
            raise PTQError(f"{self.name} takes a numpy array of shape (N, {shape}), got {type(images).__name__}")
        if images.ndim != len(self.input_shape) + 1 or images.shape[1:] != self.input_shape:
            hint = ""
            if sorted(images.shape[1:]) == sorted(self.input_shape) and images.ndim == 4:
                hint = f": transpose {_other(self.layout)} to {self.layout}"
            raise PTQError(
                f"{self.name} takes images of shape (N, {shape}) ({self.layout}, values "
                f"{self.input_range[0]:g}..{self.input_range[1]:g}), got {images.shape}{hint}"
            )
        if images.dtype.name not in self.accepts:
            raise PTQError(
                f"{self.name} takes {' or '.join(self.accepts)} images (values {self.input_range[0]:g}.."
                f"{self.input_range[1]:g}), got {images.dtype}: convert them with .astype(np.{self.input_dtype})"
            )
        return np.ascontiguousarray(images, dtype=self.input_dtype)


def _other(layout: str) -> str:
    return "NCHW" if layout == "NHWC" else "NHWC"


def _resnet8(h5: Path | None) -> Any:
    from ptq_core.resnet8 import load_keras_h5

    assert h5 is not None, "ResNet8 is built from its located .h5"
    return load_keras_h5(h5)


def _resnet8_sha256() -> str:
    from ptq_core.sources import RESNET8_SHA256

    return RESNET8_SHA256


def _mobilenetv1(weights: Path | None) -> Any:
    from ptq_core.mobilenet import load_weights

    return load_weights()


def _mobilenetv1_sha256() -> str:
    from ptq_core.mobilenet import WEIGHTS_SHA256

    return WEIGHTS_SHA256


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model(
            name="resnet8",
            dataset="cifar10",
            input_shape=(32, 32, 3),
            layout="NHWC",
            input_range=(0.0, 255.0),
            num_classes=10,
            reference_correct=8719,  # MLPerf Tiny ResNet8: 87.19 % on the 10,000 CIFAR-10 test images
            module="resnet8",
            build=_resnet8,
            weights_sha256=_resnet8_sha256,
            weights="resnet8_h5",
        ),
        Model(
            name="mobilenetv1",
            dataset="cifar10",
            input_shape=(32, 32, 3),
            layout="NHWC",
            input_range=(0.0, 255.0),
            num_classes=10,
            reference_correct=8614,  # trained on the train split by ptq_core/train_mobilenet.py (seed 0)
            module="mobilenet",
            build=_mobilenetv1,
            weights_sha256=_mobilenetv1_sha256,
        ),
    )
}
DEFAULT_MODEL = "resnet8"


def register_model(model: Model) -> Model:
    """Add a model to the registry (``ptq run`` registers the user's ONNX classifier); the same one twice is a no-op."""
    if MODELS.setdefault(model.name, model) != model:
        raise PTQError(f"a different model named {model.name!r} is already registered: rename the file")
    return model


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise PTQError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None
