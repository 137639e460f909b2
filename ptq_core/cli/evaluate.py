"""``ptq evaluate``: the accuracy of any model file on the 10,000 test images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ptq_core.cli.common import source_args
from ptq_core.errors import PTQError
from ptq_core.runtimes import runtimes_for

NAME = "evaluate"
EXAMPLE = """python -m ptq_core evaluate --model models/resnet8.onnx --runtime openvino --json
top-1 accuracy of any model (.onnx or .pt2) on the 10,000 CIFAR-10 test images"""


def add(sub: Any) -> None:
    parser = sub.add_parser(NAME, help="accuracy of a model on the 10,000 test images")
    parser.add_argument("--model", required=True, type=Path, help="a .onnx or .pt2 (torch.export) file")
    parser.add_argument(
        "--runtime",
        choices=tuple(r.name for r in runtimes_for()),
        help="what runs it (default: the first that takes its format)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    source_args(parser)


def main(args: argparse.Namespace) -> None:
    from ptq_core.cifar10 import load_split
    from ptq_core.eval import evaluate
    from ptq_core.evaluation import EvaluationFailed
    from ptq_core.output import finite
    from ptq_core.sources import find_cifar10

    test = load_split(find_cifar10(args.cifar10_dir), "test")  # no weights needed to score a model
    try:
        result = evaluate(args.model, test.images, test.labels, runtime=args.runtime)
    except EvaluationFailed as exc:  # the model is this command's input
        raise PTQError(f"--model {args.model} {exc}: pass a model file the runtime reads") from exc
    if args.json:
        print(json.dumps(finite({"model": str(args.model), **result.as_dict()}), allow_nan=False))
    else:
        print(f"{args.model}: {result.accuracy:.2%} ({result.correct}/{result.total})")
