"""What several commands share: where data, weights and artifacts are found."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

OUTPUT_HELP = "the model's output that holds the (N, classes) scores (default: its first output)"


def source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cifar10-dir", metavar="DIR", help="the cifar-10-batches-py folder")
    parser.add_argument("--resnet8-h5", metavar="FILE", help="pretrainedResnet.h5 (MLPerf Tiny ResNet8)")
    parser.add_argument(
        "--models-dir", metavar="DIR", help="where artifacts are built (default ./models, or $PTQ_MODELS_DIR)"
    )


def workspace(args: argparse.Namespace) -> Any:
    from ptq_core.workspace import Workspace

    return Workspace.locate(args.cifar10_dir, args.resnet8_h5, args.models_dir)


def choices(values: Sequence[str]) -> str:
    return ", ".join(values)
