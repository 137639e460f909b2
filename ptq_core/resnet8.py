"""ResNet8 for CIFAR-10 (the MLPerf Tiny reference model) in PyTorch, loaded from its Keras HDF5 weights.

The module is the Keras model exactly: NHWC float32 input of raw pixels in [0, 255], softmax output.
Keras 'same' padding with stride 2 on an even input pads only bottom/right, so those convs get an
explicit ``nn.ZeroPad2d`` in front of a plain ``nn.Conv2d`` (quantizers pattern-match plain convs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptq_core.cifar10 import NUM_CLASSES
from ptq_core.errors import PTQError

BN_EPS = 1e-3
INPUT_SHAPE = (32, 32, 3)


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Module:
    if stride == 1:
        return nn.Conv2d(cin, cout, k, stride=1, padding=k // 2)
    pad = max(k - stride, 0)  # total 'same' padding on an even input, all of it bottom/right
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=0)
    return nn.Sequential(nn.ZeroPad2d((0, pad, 0, pad)), conv) if pad else conv


class ResidualStack(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.conv2 = _conv(cout, cout, 3, 1)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.shortcut = _conv(cin, cout, 1, stride) if stride != 1 else None
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(y + skip)


class ResNet8(nn.Module):
    """Input (N, 32, 32, 3) float32 in [0, 255]; output (N, 10) class probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16, eps=BN_EPS)
        self.relu = nn.ReLU()
        self.stack1 = ResidualStack(16, 16, 1)
        self.stack2 = ResidualStack(16, 32, 2)
        self.stack3 = ResidualStack(32, 64, 2)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        x = self.relu(self.bn(self.conv(x)))
        x = self.stack3(self.stack2(self.stack1(x)))
        x = torch.flatten(self.pool(x), 1)
        return torch.softmax(self.fc(x), dim=1)


# Keras layer name -> (module path) in ResNet8, following the layer graph in the HDF5 model_config.
_CONV_NAMES = {
    "conv2d": "conv",
    "conv2d_1": "stack1.conv1",
    "conv2d_2": "stack1.conv2",
    "conv2d_3": "stack2.conv1",
    "conv2d_4": "stack2.conv2",
    "conv2d_5": "stack2.shortcut",
    "conv2d_6": "stack3.conv1",
    "conv2d_7": "stack3.conv2",
    "conv2d_8": "stack3.shortcut",
}
_BN_NAMES = {
    "batch_normalization": "bn",
    "batch_normalization_1": "stack1.bn1",
    "batch_normalization_2": "stack1.bn2",
    "batch_normalization_3": "stack2.bn1",
    "batch_normalization_4": "stack2.bn2",
    "batch_normalization_5": "stack3.bn1",
    "batch_normalization_6": "stack3.bn2",
}


def _plain_conv(module: nn.Module) -> nn.Conv2d:
    if isinstance(module, nn.Sequential):
        module = module[-1]
    assert isinstance(module, nn.Conv2d)
    return module


def load_keras_h5(path: str | Path) -> ResNet8:
    """Build ResNet8 in eval mode with the weights of the MLPerf Tiny Keras HDF5 file at ``path``."""
    import h5py

    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as exc:
        raise PTQError(
            f"cannot read ResNet8 weights {path}: {exc}. "
            "Point --resnet8-h5 / PTQ_RESNET8_H5 at pretrainedResnet.h5 or run `python -m ptq_core prepare`."
        ) from exc
    model = ResNet8()
    modules = dict(model.named_modules())
    with h5:
        try:
            weights = h5["model_weights"]

            def get(layer: str, name: str) -> torch.Tensor:
                return torch.from_numpy(np.asarray(weights[layer][layer][f"{name}:0"], dtype=np.float32))

            with torch.no_grad():
                for keras, ours in _CONV_NAMES.items():
                    conv = _plain_conv(modules[ours])
                    kernel = get(keras, "kernel").permute(3, 2, 0, 1)  # HWIO -> OIHW
                    _copy(conv.weight, kernel, keras)
                    _copy(conv.bias, get(keras, "bias"), keras)
                for keras, ours in _BN_NAMES.items():
                    bn = modules[ours]
                    assert isinstance(bn, nn.BatchNorm2d)
                    _copy(bn.weight, get(keras, "gamma"), keras)
                    _copy(bn.bias, get(keras, "beta"), keras)
                    _copy(bn.running_mean, get(keras, "moving_mean"), keras)
                    _copy(bn.running_var, get(keras, "moving_variance"), keras)
                _copy(model.fc.weight, get("dense", "kernel").T, "dense")
                _copy(model.fc.bias, get("dense", "bias"), "dense")
        except KeyError as exc:
            raise PTQError(
                f"{path} is not the MLPerf Tiny ResNet8 HDF5 file (missing {exc}); "
                "use pretrainedResnet.h5 from mlcommons/tiny (see docs/usage.md, Data and weights)."
            ) from exc
    return model.eval()


def _copy(dst: torch.Tensor | None, src: torch.Tensor, layer: str) -> None:
    if dst is None or dst.shape != src.shape:
        expected = None if dst is None else tuple(dst.shape)
        raise PTQError(f"Keras layer {layer}: weight shape {tuple(src.shape)} != expected {expected}")
    dst.copy_(src)
