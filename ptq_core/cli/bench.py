"""``ptq bench``: the fastest honest 8-bit deployment, every runtime timed in interleaved rounds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ptq_core.cli.common import source_args, workspace
from ptq_core.models import DEFAULT_MODEL, MODELS
from ptq_core.options import whole_number

NAME = "bench"
EXAMPLE = """python -m ptq_core bench --out bench/
every runtime x each backend's default cell: images/s, ratio to ORT FP32, fraction of int8 peak"""


def add(sub: Any) -> None:
    from ptq_core.bench import ROUNDS

    parser = sub.add_parser(
        NAME,
        help="every runtime x each backend's default cell, batch 1/256, 1/2 threads: speed, fraction of int8 peak",
        description="Times FP32 and each backend's default cell on every runtime that deploys (ONNX Runtime, "
        "OpenVINO f32, OpenVINO's default precision, OpenVINO's throughput hint with one stream per thread, ONNX "
        "Runtime on uint8 pixels, Inductor for .pt2) in interleaved rounds, scores each deployment on the 10,000 "
        "test images as it runs, and names the fastest one within the allowed accuracy drop, against ORT FP32 and "
        "against the fastest float deployment. Needs a quiet machine: 70-120 s on 2 cores.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=tuple(MODELS))
    parser.add_argument(
        "--rounds",
        type=whole_number("--rounds", 1, f"a number of interleaved rounds >= 1 (default {ROUNDS})"),
        default=ROUNDS,
        help=f"interleaved rounds per group (default {ROUNDS})",
    )
    parser.add_argument("--out", type=Path, help="also write bench.json and bench.md into this folder")
    parser.add_argument(
        "--ort-attempts",
        action="store_true",
        help="also time what else ONNX Runtime can do with the u8s8 cell (QOperator, uint8 input, spinning) "
        "and profile it per op type",
    )
    source_args(parser)


def main(args: argparse.Namespace) -> int:
    from ptq_core import bench, bench_report
    from ptq_core.output import check_replaceable, finite, write_folder

    if args.out:
        check_replaceable(args.out, "bench", keep={"--models-dir": args.models_dir})  # before a minute of timing
    ws = workspace(args)
    result = bench.measure(ws, args.model, rounds=args.rounds)
    text = bench_report.markdown(result)
    if args.ort_attempts:
        import numpy as np

        from ptq_core import bench_ort
        from ptq_core.matrix import Cell

        result["ort_attempts"] = bench_ort.ort_attempts(ws, args.model, rounds=args.rounds)
        images = np.ascontiguousarray(ws.split("test").images[:256], dtype=np.float32)
        result["ort_profile"] = bench_ort.op_profile(
            ws.quantized(Cell("onnxruntime", "u8s8", model=args.model)), images
        )
        text += "\n" + bench_ort.attempts_markdown(result["ort_attempts"], result["ort_profile"])
    print(text)
    if args.out:
        write_folder(
            args.out,
            "bench",
            lambda folder: (
                (folder / "bench.json").write_text(
                    json.dumps(finite(result), indent=1, sort_keys=True, default=str, allow_nan=False)
                ),
                (folder / "bench.md").write_text(text),
            ),
        )
    return 1 if any(row.get("images_per_s") is None for row in result["rows"]) else 0  # a deployment failed
