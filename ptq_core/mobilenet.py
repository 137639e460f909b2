"""MobileNetV1 at half width for CIFAR-10, trained here (``ptq_core/train_mobilenet.py``), kept as ``.npz``.

It takes what ResNet8 takes, NHWC float32 raw pixels in [0, 255], and answers softmax probabilities;
it normalizes its input itself. Every block is a depthwise 3x3 conv (groups = channels) and a pointwise
1x1 conv, each followed by BatchNorm and ReLU: the layers ResNet8 lacks. Convs have no bias, so in eval
mode each BatchNorm folds into the conv before it.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptq_core.cifar10 import NUM_CLASSES
from ptq_core.errors import PTQError

INPUT_SHAPE = (32, 32, 3)
STEM_CHANNELS = 16
# (out_channels, stride) of each depthwise-separable block: 32x32 -> 16x16 -> 8x8 -> 4x4
BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1), (256, 1))
FINAL_SIZE = 4
# the CIFAR-10 train split's per-channel pixel mean and standard deviation, in [0, 255] units
PIXEL_MEAN = (125.31, 122.95, 113.87)
PIXEL_STD = (62.99, 62.09, 66.70)

WEIGHTS_PATH = Path(__file__).parent / "weights" / "mobilenetv1_cifar10.npz"
WEIGHTS_SHA256 = "6fbe34026eaa0d2139cc23a14bee597eb1bfca90e19bbb1b4a05b73c055af7c1"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp, so the same weights always give the same file


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = _conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.pointwise = _conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1Cifar(nn.Module):
    """Input (N, 32, 32, 3) float32 in [0, 255]; output (N, 10) class probabilities."""

    pixel_mean: torch.Tensor
    pixel_scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_scale", 1 / torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = _conv_bn_relu(3, STEM_CHANNELS, 3)
        channels = [STEM_CHANNELS, *(cout for cout, _ in BLOCKS)]
        self.blocks = nn.Sequential(
            *(DepthwiseSeparable(cin, cout, stride) for cin, (cout, stride) in zip(channels[:-1], BLOCKS, strict=True))
        )
        self.pool = nn.AvgPool2d(FINAL_SIZE)
        self.fc = nn.Linear(channels[-1], NUM_CLASSES)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.permute(0, 3, 1, 2) - self.pixel_mean) * self.pixel_scale
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def save_weights(model: nn.Module, path: str | Path) -> str:
    """Write the state dict as float32 ``.npz`` (via a temporary name); return the file's sha256.

    Unlike ``np.savez`` the zip has fixed timestamps, so equal weights give byte-identical files.
    """
    path = Path(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, tensor in sorted(_float_state(model).items()):
            array = io.BytesIO()
            np.lib.format.write_array(array, tensor.detach().cpu().numpy().astype(np.float32), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), array.getvalue())
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load_weights(path: str | Path = WEIGHTS_PATH, sha256: str | None = WEIGHTS_SHA256) -> MobileNetV1Cifar:
    """The model in eval mode with the weights at ``path``, checked against ``sha256`` (None: unchecked)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PTQError(
            f"cannot read MobileNetV1 weights {path}: {exc.strerror}. "
            "Train them with `python -m ptq_core.train_mobilenet --cifar10-dir DIR --out PATH`."
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise PTQError(
            f"{path}: sha256 {digest[:12]}… != expected {sha256[:12]}…; restore the committed weights, "
            "or set WEIGHTS_SHA256 in ptq_core/mobilenet.py to the digest train_mobilenet printed."
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise PTQError(f"{path} is not a readable .npz of weights ({exc}); retrain or restore it") from exc
    model = MobileNetV1Cifar()
    expected = _float_state(model)
    missing, unexpected = sorted(expected.keys() - arrays.keys()), sorted(arrays.keys() - expected.keys())
    if missing or unexpected:
        raise PTQError(f"{path} does not fit MobileNetV1Cifar: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, tensor in expected.items():
            array = arrays[name]
            if array.shape != tuple(tensor.shape) or array.dtype != np.float32:
                raise PTQError(f"{path}: {name} is {array.dtype} {array.shape}, expected float32 {tuple(tensor.shape)}")
            tensor.copy_(torch.from_numpy(array))
    return model.eval()


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and BatchNorm statistics; not the step counters, which eval mode never reads."""
    return {name: t for name, t in model.state_dict(keep_vars=True).items() if t.is_floating_point()}
