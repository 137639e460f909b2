"""What several commands share: where data, weights and artifacts are found."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
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


def user_model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """What names a user's classifier, its data and its calibration, as ``ptq run`` takes them: the same values
    open the same cache (built models, predictions, blames)."""
    from ptq_core.calibration import CalibrationConfig
    from ptq_core.options import SEED, whole_number
    from ptq_core.user import DEFAULT_SAMPLES

    seed = CalibrationConfig().seed
    parser.add_argument(
        "--model",
        "--onnx",
        dest="onnx",
        required=required,
        type=Path,
        metavar="MODEL",
        help="the FP32 classifier: an ONNX file, or a torch.export archive (.pt2, exported with a dynamic batch), "
        "which every PT2E cell quantizes and whose ONNX export every ONNX cell quantizes",
    )
    parser.add_argument(
        "--data",
        required=required,
        type=Path,
        metavar="DATA",
        help="`images` exactly as the model's input takes them (layout, dtype, range) and `labels` (class ids): "
        "they score every model. An .npz (read whole), or images.npy with labels.npy beside it, or a folder of "
        "shards (.npz files, or images-K.npy + labels-K.npy pairs): read batch by batch, so any size fits",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="CALIB",
        help="`images` (and optionally `labels`, to stratify) to calibrate from, in any form --data takes; "
        "default: a stratified subset of --data, reported as such",
    )
    parser.add_argument(
        "--samples",
        type=whole_number("--samples", 1, f"a number of calibration images >= 1 (default {DEFAULT_SAMPLES})"),
        default=DEFAULT_SAMPLES,
        help=f"calibration images, stratified when labelled (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument("--seed", type=SEED, default=seed, help=f"calibration sampling seed (default {seed})")
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="where built models and predictions are kept (default $PTQ_CACHE_DIR/run, ~/.cache/ptq-suite/run)",
    )
    parser.add_argument("--output", metavar="NAME", help=OUTPUT_HELP)


def user_store(args: argparse.Namespace) -> Any:
    """The :class:`UserStore` ``user_model_args`` name."""
    from ptq_core.run import RunInputs

    return RunInputs(args.onnx, args.data, args.calibration, args.samples, args.seed, args.cache, args.output)
