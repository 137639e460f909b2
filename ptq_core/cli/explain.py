"""``ptq explain``: which layers a quantized cell loses its accuracy in (``ptq_core.blame``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ptq_core.cli.common import source_args, user_model_args, user_store, workspace
from ptq_core.errors import PTQError

NAME = "explain"
EXAMPLE = """python -m ptq_core explain resnet8-onnxruntime-uint8-entropy-per_tensor --out blame.json
which layers the cell loses its accuracy in: each left alone in float, ranked by what it regains"""
USER_EXAMPLE = "python -m ptq_core explain onnxruntime-u8s8-entropy-per_channel --model net.onnx --data test.npz"


def add(sub: Any) -> None:
    from ptq_core.blame import CONFIRMED

    parser = sub.add_parser(
        NAME,
        help="which layers a quantized cell loses its accuracy in",
        description="Each conv/linear layer of the cell is left alone in float and ranked by the images it wins "
        "back among the test images FP32 and the cell classify differently; the top layers are then scored on the "
        "whole test split. Each layer's output and weight SQNR against FP32 (ONNX Runtime's QDQ graph for ONNX "
        "cells, torchao's numeric debugger for PT2E ones) and the range the calibrator chose for its output stand "
        "beside it. A backend that declares no mixed precision (NNCF) is refused by name. Prints a headline and a "
        "markdown table; progress goes to stderr. With --model and --data, the cell is one of YOUR classifier's, "
        "as `ptq run` with the same options names and builds it (a blame `ptq run` measured is read from its cache).",
        epilog=f"examples:\n  {EXAMPLE.splitlines()[0]}\n  {USER_EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "cell",
        help="a cell id as the suite names it, e.g. resnet8-onnxruntime-u8s8-entropy-per_channel; with --model, "
        "as `ptq run` names it, with or without the model's name first, e.g. onnxruntime-u8s8-entropy-per_channel",
    )
    parser.add_argument("--runtime", help="where the cell is scored (default: the first runtime of its format)")
    parser.add_argument(
        "--confirm",
        type=int,
        default=CONFIRMED,
        metavar="N",
        help=f"top layers scored on the whole test split (default {CONFIRMED})",
    )
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write the blame table as JSON here too")
    source_args(parser)
    user_model_args(parser.add_argument_group("your classifier (as ptq run takes it)"), required=False)


def _cell(name: str) -> Any:
    from ptq_core.matrix import CELLS

    cell = next((c for c in CELLS if c.id == name), None)
    if cell is None:
        raise PTQError(
            f"no cell {name}: cells are named like {CELLS[0].id} (model-backend-dtype-calibrator-granularity)"
        )
    return cell


def _user_cell(store: Any, name: str) -> Any:
    cells = store.cells()
    cell = next((c for c in cells if name in (c.id, c.id.removeprefix(f"{c.model}-"))), None)
    if cell is None:
        names = ", ".join(c.id.removeprefix(f"{c.model}-") for c in cells[:2])
        raise PTQError(f"{store.model.name} has no cell {name}: its cells are named like {names} (ptq run's names)")
    return cell


def main(args: argparse.Namespace) -> None:
    from ptq_core.blame import Blame, format_table
    from ptq_core.blame_report import cached
    from ptq_core.cache import write_atomic

    if args.confirm < 0:
        raise PTQError(f"--confirm {args.confirm}: give how many top layers to score on the test split, 0 or more")
    if args.onnx is None:
        if args.data or args.calibration or args.cache or args.output:
            raise PTQError("--data, --calibration, --cache and --output go with --model MODEL (your classifier)")
        store, cell = workspace(args), _cell(args.cell)
    else:
        if args.data is None:
            raise PTQError("ptq explain --model needs --data DATA (the images and labels ptq run scored)")
        store = user_store(args).open()
        cell = _user_cell(store, args.cell)
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    found = Blame.from_json(cached(store, cell, args.runtime, say, confirmed=args.confirm))
    print(format_table(found))
    if args.out:
        try:
            write_atomic(args.out, json.dumps(found.as_json(), indent=1) + "\n")
        except OSError as exc:
            raise PTQError(f"cannot write --out {args.out} ({exc.strerror or exc}): choose a writable folder") from exc
