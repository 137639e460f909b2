"""``ptq tune``: the 8-bit model to ship, chosen on validation images, the test split scored once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ptq_core.cli.common import OUTPUT_HELP, source_args, workspace
from ptq_core.errors import PTQError
from ptq_core.models import DEFAULT_MODEL, MODELS
from ptq_core.options import max_drop_points, minutes, whole_number

NAME = "tune"
EXAMPLE = """python -m ptq_core tune --max-drop 0.3 --out tuned/
the model to ship: fastest within 0.3 points of FP32 on validation images; test scored once
(--onnx my_model.onnx or my_model.pt2 --data test.npz --calibration calib.npz: YOUR classifier)"""


def add(sub: Any) -> None:
    from ptq_core import tune as search

    sizes = " ".join(map(str, search.CALIBRATION_SAMPLES))
    parser = sub.add_parser(
        NAME,
        help="the 8-bit model to ship: fastest (or smallest) within --max-drop on validation, test scored once",
        description=f"Searches every cell, calibrated on {sizes.replace(' ', ' and ')} train images (ONNX cells on "
        "every runtime, PT2E cells compiled by Inductor), plus mixed precision in ONNX Runtime and PT2E (the most "
        "sensitive layers left in float), scoring each on a stratified validation set of train images no "
        "calibration saw. Among the candidates within --max-drop points of FP32 on validation, the fastest at batch "
        "256 (timed in one interleaved run) or the smallest wins; only then is the test split scored, for it and "
        "FP32. Exit 0 with a chosen model, 1 when no candidate holds --max-drop (the best one is reported with its "
        "shortfall) or a runtime failed a candidate, 2 on bad input.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=tuple(MODELS))
    parser.add_argument(
        "--max-drop", type=max_drop_points, required=True, metavar="POINTS", help="accuracy drop allowed (points)"
    )
    parser.add_argument("--objective", choices=("speed", "size"), default="speed", help="what wins (default speed)")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="tune.json, tune.md, tune.png, the model"
    )
    parser.add_argument(
        "--budget", type=minutes, metavar="MINUTES", help="stop searching after this long (best so far)"
    )
    parser.add_argument(
        "--validation",
        type=whole_number("--validation", 1, f"a number of validation images >= 1 (default {search.VALIDATION_SIZE})"),
        metavar="N",
        help=f"validation images, stratified, none of them calibrating (default {search.VALIDATION_SIZE}, or all "
        "when fewer remain)",
    )
    parser.add_argument(
        "--cells", nargs="+", default=(), metavar="PATTERN", help="search only these cells, e.g. 'nncf-*'"
    )
    parser.add_argument(
        "--calibration-samples",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help=f"calibrate each cell on each of these numbers of stratified train images (default {sizes}; "
        "entropy and distribution cells on the first only; not with --onnx: a user's model has one set)",
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        metavar="MODEL",
        help="tune YOUR classifier instead, as ptq run takes it: an ONNX file, or a torch.export archive (.pt2) "
        "whose uint8 PT2E cells are tried on Inductor (its x86 int8 kernels take uint8 activations) and whose "
        "ONNX export the ONNX cells quantize",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DATA",
        help="with --onnx: `images` and `labels` scored once, at the end (any form ptq run's --data takes)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="CALIB",
        help="with --onnx: labelled `images` and `labels`; 200 stratified calibrate, the others validate",
    )
    parser.add_argument("--cache", type=Path, metavar="DIR", help="with --onnx: build cache (default as ptq run's)")
    parser.add_argument("--output", metavar="NAME", help="with --onnx: " + OUTPUT_HELP)
    source_args(parser)


def main(args: argparse.Namespace) -> int:
    from ptq_core import tune as search
    from ptq_core.output import check_replaceable
    from ptq_core.tune import report as tune_report

    inputs = {"--onnx": args.onnx, "--data": args.data, "--calibration": args.calibration, "--cache": args.cache}
    check_replaceable(args.out, "tune", keep={**inputs, "--models-dir": args.models_dir})  # before the search
    if args.onnx is None:
        if args.data or args.calibration or args.output:
            raise PTQError("--data, --calibration and --output go with --onnx MODEL (your classifier: .onnx or .pt2)")
        ws, model = workspace(args), args.model
    else:
        if args.data is None or args.calibration is None:
            raise PTQError(
                "ptq tune --onnx needs --data DATA.npz (scored once, at the end) and --calibration CALIB.npz "
                "(labelled: it calibrates and validates)"
            )
        from ptq_core.run import RunInputs

        ws = RunInputs(args.onnx, args.data, args.calibration, cache_dir=args.cache, output=args.output).open()
        model = ws.model.name
    result = search.tune(
        ws,
        args.max_drop,
        model,
        args.objective,
        args.budget,
        args.validation,
        tuple(args.cells),
        calibration_samples=tuple(args.calibration_samples) if args.calibration_samples else None,
    )
    for path in tune_report.write(result, args.out):
        print(path)
    print(tune_report.markdown(result).split("\n\n| candidate")[0])
    for failure in result["failed_candidates"]:
        print(f"FAILED candidate {failure['candidate']}: {failure['outcome']}: {failure['reason']}")
    return 0 if "chosen" in result and not result["failed_candidates"] else 1
