"""``ptq quantize``: build one cell of the matrix."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ptq_core.backends import BACKENDS
from ptq_core.calibration import CalibrationConfig
from ptq_core.cli.common import choices, source_args, workspace
from ptq_core.errors import PTQError
from ptq_core.formats import FORMATS
from ptq_core.models import DEFAULT_MODEL, MODELS
from ptq_core.options import SEED

NAME = "quantize"
EXAMPLE = """python -m ptq_core quantize --backend onnxruntime --dtype u8s8 --calibrator entropy
build one cell of the matrix into models/ (or --out PATH); every axis has a default"""
DEFAULT = CalibrationConfig()


def add(sub: Any) -> None:
    parser = sub.add_parser(
        NAME,
        help="build one quantized cell",
        epilog="\n".join(
            f"{b.name}: dtypes {choices(tuple(b.dtypes))}; calibrators {choices(b.calibrators)}; "
            f"granularities {choices(b.granularities)} (first = default); writes {FORMATS[b.format].suffix}"
            for b in BACKENDS.values()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", "--framework", dest="backend", required=True, choices=tuple(BACKENDS))
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=tuple(MODELS))
    parser.add_argument("--dtype", default="", help="activation/weight types (see below; default: the first)")
    parser.add_argument("--calibrator", default="", help="range estimation (see below; default: the first)")
    parser.add_argument("--granularity", default="", help="weight scales (see below; default: the first)")
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT.num_samples,
        help=f"calibration images, stratified (default {DEFAULT.num_samples})",
    )
    parser.add_argument(
        "--seed", type=SEED, default=DEFAULT.seed, help=f"calibration sampling seed (default {DEFAULT.seed})"
    )
    parser.add_argument(
        "--split",
        default=DEFAULT.split,
        choices=("train", "test"),
        help=f"split to calibrate from (default {DEFAULT.split}: the scored test images never calibrate)",
    )
    parser.add_argument("--out", type=Path, help="copy the artifact here too (with the format's suffix)")
    source_args(parser)


def main(args: argparse.Namespace) -> None:
    import os
    import shutil

    from ptq_core.matrix import Cell

    cell = Cell(args.backend, args.dtype, args.calibrator, args.granularity, args.model)
    config = CalibrationConfig(args.samples, args.seed, args.split)
    suffix = FORMATS[cell.backend_spec.format].suffix
    if args.out and args.out.suffix != suffix:
        raise PTQError(f"--out {args.out}: {cell.backend} writes {suffix} files, name it e.g. {args.out.stem}{suffix}")
    ws = workspace(args)
    ws.calibration(config)  # a bad sample count fails here, before any model is built
    path = ws.quantized(cell, config)
    if args.out:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, args.out)  # a reader never sees half a model at --out
        except OSError as exc:
            raise PTQError(f"cannot write --out {args.out} ({exc.strerror or exc}): choose a writable folder") from exc
        finally:
            tmp.unlink(missing_ok=True)
        path = args.out
    print(f"{cell.id}: {path}")
