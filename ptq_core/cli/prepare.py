"""``ptq prepare``: verify data and weights, build the FP32 models."""

from __future__ import annotations

import argparse
from typing import Any

from ptq_core.cli.common import source_args, workspace

NAME = "prepare"
EXAMPLE = """python -m ptq_core prepare
find or download CIFAR-10 and the ResNet8 weights, verify them, build models/resnet8.{onnx,pt2}"""


def add(sub: Any) -> None:
    source_args(sub.add_parser(NAME, help="verify data and weights, build the FP32 models"))


def main(args: argparse.Namespace) -> None:
    from ptq_core.eval import evaluate
    from ptq_core.formats import FORMATS

    ws = workspace(args)
    test = ws.split("test")
    print(f"CIFAR-10 test split verified: {ws.cifar10_dir} ({len(test)} images)")
    print(f"ResNet8 weights verified:     {ws.resnet8_h5}")
    for fmt in FORMATS:
        path = ws.fp32(fmt)
        result = evaluate(path, test.images, test.labels)
        print(f"{path}: {result.accuracy:.2%} ({result.correct}/{result.total})")
