"""``ptq run``: every cell of every ONNX backend on YOUR classifier, checked and scored against its FP32."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ptq_core.backends import BACKENDS
from ptq_core.checks import MAX_ACCURACY_DROP_POINTS
from ptq_core.cli.common import user_model_args
from ptq_core.options import max_drop_points, shard, whole_number

NAME = "run"
EXAMPLE = """python -m ptq_core run --model my_model.onnx --data test.npz --out my_report/
every cell on YOUR classifier (.onnx, or .pt2 for the PT2E cells too): checks, accuracy vs its FP32, report"""
EPILOG = """\
exit status: 0 every check passes on every cell not known to fail; 1 a check fails, or a runtime failed an
evaluation (cannot load or compile a cell, raises while scoring, answers NaN) or a quantizer raised on a
cell (each named above the table, the whole report still written); 2 bad input (a file that is not an ONNX
model, images the model does not take, labels out of range, ...), with a message that names the thing and
the fix, before any work. Nothing is written to --out unless the run completes; built models are cached,
so a second run only re-scores what changed.

example, a PyTorch classifier exported with a dynamic batch and its test images saved as the model takes them:
  batch = {0: torch.export.Dim("batch")}
  torch.export.save(torch.export.export(net.eval(), (x,), dynamic_shapes=(batch,)), "net.pt2")  # every cell
  torch.onnx.export(net, (x,), "net.onnx", dynamo=True, dynamic_shapes=(batch,))  # or the ONNX cells only
  np.savez("test.npz", images=x_test.astype(np.float32), labels=y_test)   # e.g. NCHW, scaled to [0, 1]
  ptq run --model net.pt2 --data test.npz --out net_report/ --jobs 2
"""


def add(sub: Any) -> None:
    """``ptq run``'s options: the user's model and data (``user_model_args``, shared with ``ptq explain``), then
    the run's own."""
    parser = sub.add_parser(
        NAME,
        help="quantize YOUR classifier (.onnx or .pt2) with every cell that takes it, check and score each",
        description="Quantize a classifier with every cell of every backend that takes ONNX ("
        + ", ".join(b.name for b in BACKENDS.values() if b.source == "onnx")
        + "; a .pt2 also with "
        + ", ".join(b.name for b in BACKENDS.values() if b.source == "pt2")
        + ", and its ONNX export with the others), score each on every runtime of its format against the model's "
        "own FP32 accuracy there, run the suite's checks "
        "(8-bit graph and dtypes, size, per-class collapse, accuracy within --max-drop), and write results.json, "
        "results.md, plots and the quantized models into --out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    user_model_args(parser)
    parser.add_argument(
        "--max-drop",
        type=max_drop_points,
        default=MAX_ACCURACY_DROP_POINTS,
        metavar="POINTS",
        help=f"accuracy drop against FP32 (same runtime) that fails a cell (default {MAX_ACCURACY_DROP_POINTS:g})",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="report folder (new, or an earlier run's)"
    )
    parser.add_argument(
        "--jobs",
        type=whole_number("--jobs", 1, "a number of parallel builds >= 1 (e.g. 2)"),
        default=1,
        metavar="N",
        help="build N cells in parallel (default 1)",
    )
    parser.add_argument(
        "--cells",
        nargs="+",
        default=(),
        metavar="PATTERN",
        help="only the cells matching a pattern, e.g. 'onnxruntime-u8s8-*' 'nncf-*' (default: all)",
    )
    parser.add_argument(
        "--shard",
        type=shard,
        default=(1, 1),
        metavar="K/N",
        help="only the K-th of N parts of the cells (every N-th, from the K-th): one machine's share; "
        "`ptq report --merge` joins the N reports into the one a single run writes",
    )
    parser.add_argument(
        "--no-blame",
        action="store_true",
        help="do not say which layers a dropping cell loses its accuracy in (by default each evaluation more than "
        "half the allowed drop below FP32, or with a collapsed class, has each conv/linear layer left alone in "
        "float and ranked by what it regains: about one test-split evaluation per layer; cached)",
    )


def main(args: argparse.Namespace) -> int:
    from ptq_core.cli.common import user_store
    from ptq_core.run import failures, run, summary

    inputs = user_store(args)
    results, outcomes = run(
        inputs, args.out, args.max_drop, args.jobs, tuple(args.cells), shard=args.shard, blame=not args.no_blame
    )
    print("\n".join(summary(results, outcomes)))
    print(f"report: {args.out / 'results.md'}")
    failed = failures(outcomes)
    for o in failed:
        print(f"FAILED {o.check} {o.message}")
    for line in results["failed_evaluations"]:
        print(f"FAILED evaluation {line}")
    return 1 if failed or results["failed_evaluations"] else 0
