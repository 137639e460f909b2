"""``python -m ptq_core`` / ``ptq``: prepare the FP32 models, quantize one cell, evaluate any model."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ptq_core.backends import BACKENDS
from ptq_core.calibration import CalibrationConfig
from ptq_core.checks import MAX_ACCURACY_DROP_POINTS
from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed
from ptq_core.formats import FORMATS
from ptq_core.matrix import Cell
from ptq_core.models import DEFAULT_MODEL, MODELS
from ptq_core.output import check_replaceable, finite, write_folder
from ptq_core.runtimes import runtimes_for

EXAMPLES = """\
subcommands, one example each:
  prepare    python -m ptq_core prepare
             find or download CIFAR-10 and the ResNet8 weights, verify them, build models/resnet8.{onnx,pt2}
  quantize   python -m ptq_core quantize --backend onnxruntime --dtype u8s8 --calibrator entropy
             build one cell of the matrix into models/ (or --out PATH); every axis has a default
  evaluate   python -m ptq_core evaluate --model models/resnet8.onnx --runtime openvino --json
             top-1 accuracy of any model (.onnx or .pt2) on the 10,000 CIFAR-10 test images
  report     python -m ptq_core report --out report/
             build and evaluate every cell, write results.json, results.md and plots
             (--merge shard1/ shard2/: one report from shards run with pytest --splits N --group i --ptq-report)
  run        python -m ptq_core run --onnx my_model.onnx --data test.npz --out my_report/
             every cell of every ONNX backend on YOUR classifier: checks, accuracy vs its FP32, report
  bench      python -m ptq_core bench --out bench/
             every runtime x each backend's default cell: images/s, ratio to ORT FP32, fraction of int8 peak
  tune       python -m ptq_core tune --max-drop 0.3 --out tuned/
             the model to ship: fastest within 0.3 points of FP32 on validation images; test scored once
             (--onnx my_model.onnx --data test.npz --calibration calib.npz: YOUR classifier)
  compare    python -m ptq_core compare tests/baselines/OLD-STACK tests/baselines/NEW-STACK
             what changed between two library stacks' baselines: correct counts, flipped images

Data and weights are found in this order: --cifar10-dir / --resnet8-h5, then $PTQ_CIFAR10_DIR /
$PTQ_RESNET8_H5, then the cache $PTQ_CACHE_DIR (default ~/.cache/ptq-suite), else downloaded from the
official sources and verified by checksum.
"""


class OptionError(PTQError, argparse.ArgumentTypeError):
    """A bad option value: argparse reports it at parse time (exit 2, before any work); raised by the API
    (``run``, ``tune``), a PTQError like any bad input."""


def max_drop_points(value: str | float, option: str = "--max-drop") -> float:
    """The one validator of an allowed accuracy drop (``ptq run``/``ptq tune`` ``--max-drop``, the pytest
    plugin's ``--ptq-max-drop``, ``run()``/``tune()``'s ``max_drop``): finite points from 0 to 100."""
    try:
        points = float(value)
    except (TypeError, ValueError):
        points = math.nan
    if not (math.isfinite(points) and 0 <= points <= 100):
        raise OptionError(
            f"{option} {value}: give the accuracy drop you accept against FP32, in points: a number from 0 to 100 "
            "(e.g. 3)"
        )
    return points


def _whole_number(option: str, low: int, what: str) -> Callable[[str], int]:
    """An argparse ``type=``: an integer >= ``low``, else exit 2 naming ``option`` and what to give."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or number < low:
            raise OptionError(f"{option} {text}: give {what}")
        return number

    parse.__name__ = option.lstrip("-").replace("-", "_")
    return parse


def _minutes(text: str) -> float:
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        raise OptionError(f"--budget {text}: give the minutes the search may take, a number > 0 (e.g. 30)")
    return minutes


SEED = _whole_number("--seed", 0, "a calibration sampling seed >= 0 (e.g. 42)")


OUTPUT_HELP = "the model's output that holds the (N, classes) scores (default: its first output)"


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cifar10-dir", metavar="DIR", help="the cifar-10-batches-py folder")
    parser.add_argument("--resnet8-h5", metavar="FILE", help="pretrainedResnet.h5 (MLPerf Tiny ResNet8)")
    parser.add_argument(
        "--models-dir", metavar="DIR", help="where artifacts are built (default ./models, or $PTQ_MODELS_DIR)"
    )


def _choices(values: Sequence[str]) -> str:
    return ", ".join(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptq",
        description="Static post-training quantization of ResNet8 (CIFAR-10) with "
        + ", ".join(BACKENDS)
        + ", scored on "
        + ", ".join(r.name for r in runtimes_for())
        + ": what 8 bits cost in accuracy.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{prepare,quantize,evaluate,report,run,bench,tune,compare}"
    )

    prepare = sub.add_parser("prepare", help="verify data and weights, build the FP32 models")
    _source_args(prepare)

    quantize = sub.add_parser(
        "quantize",
        help="build one quantized cell",
        epilog="\n".join(
            f"{b.name}: dtypes {_choices(tuple(b.dtypes))}; calibrators {_choices(b.calibrators)}; "
            f"granularities {_choices(b.granularities)} (first = default); writes {FORMATS[b.format].suffix}"
            for b in BACKENDS.values()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quantize.add_argument("--backend", "--framework", dest="backend", required=True, choices=tuple(BACKENDS))
    quantize.add_argument("--model", default=DEFAULT_MODEL, choices=tuple(MODELS))
    quantize.add_argument("--dtype", default="", help="activation/weight types (see below; default: the first)")
    quantize.add_argument("--calibrator", default="", help="range estimation (see below; default: the first)")
    quantize.add_argument("--granularity", default="", help="weight scales (see below; default: the first)")
    quantize.add_argument("--samples", type=int, default=200, help="calibration images, stratified (default 200)")
    quantize.add_argument("--seed", type=SEED, default=42, help="calibration sampling seed (default 42)")
    quantize.add_argument(
        "--split",
        default="train",
        choices=("train", "test"),
        help="split to calibrate from (default train: the scored test images never calibrate)",
    )
    quantize.add_argument("--out", type=Path, help="copy the artifact here too (with the format's suffix)")
    _source_args(quantize)

    evaluate = sub.add_parser("evaluate", help="accuracy of a model on the 10,000 test images")
    evaluate.add_argument("--model", required=True, type=Path, help="a .onnx or .pt2 (torch.export) file")
    evaluate.add_argument(
        "--runtime",
        choices=tuple(r.name for r in runtimes_for()),
        help="what runs it (default: the first that takes its format)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    _source_args(evaluate)

    report = sub.add_parser("report", help="every cell against FP32: results.json, results.md, plots")
    report.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    report.add_argument(
        "--no-studies", action="store_true", help="skip the test-split protocol, calibration-size and SQNR studies"
    )
    report.add_argument(
        "--benchmarks",
        type=Path,
        metavar="JSON",
        help="a pytest-benchmark run to report speed from (default: the newest in .benchmarks/)",
    )
    report.add_argument(
        "--readme",
        type=Path,
        metavar="README.md",
        help="also replace the README's results section with this table and plot",
    )
    report.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="combine shards' reports (pytest --splits N --group i --ptq-report DIR) into one, building nothing",
    )
    _source_args(report)

    bench = sub.add_parser(
        "bench",
        help="every runtime x each backend's default cell, batch 1/256, 1/2 threads: speed, fraction of int8 peak",
        description="Times FP32 and each backend's default cell on every runtime (ONNX Runtime, OpenVINO f32, "
        "OpenVINO's default precision, OpenVINO's throughput hint with one stream per thread, Inductor for .pt2) "
        "in interleaved rounds, scores each deployment on the 10,000 test images as it runs, and names the fastest "
        "one within the allowed accuracy drop. Needs a quiet machine: about 3 minutes on 2 cores.",
    )
    bench.add_argument("--model", default=DEFAULT_MODEL, choices=tuple(MODELS))
    bench.add_argument("--rounds", type=int, default=7, help="interleaved rounds per group (default 7)")
    bench.add_argument("--out", type=Path, help="also write bench.json and bench.md into this folder")
    bench.add_argument(
        "--ort-attempts",
        action="store_true",
        help="also time what else ONNX Runtime can do with the u8s8 cell (QOperator, uint8 input, spinning) "
        "and profile it per op type",
    )
    _source_args(bench)

    tune = sub.add_parser(
        "tune",
        help="the 8-bit model to ship: fastest (or smallest) within --max-drop on validation, test scored once",
        description="Searches every cell, calibrated on 200 and 1,000 train images (ONNX cells on every runtime, "
        "PT2E cells compiled by Inductor), plus mixed precision in ONNX Runtime and PT2E (the most sensitive layers "
        "left in float), scoring each on a stratified validation set of train images no calibration saw. Among the "
        "candidates within --max-drop points of FP32 on validation, the fastest at batch 256 (timed in one "
        "interleaved run) or the smallest wins; only then is the test split scored, for it and FP32. Exit 0 with a "
        "chosen model, 1 when no candidate holds --max-drop (the best one is reported "
        "with its shortfall), 2 on bad input.",
    )
    tune.add_argument("--model", default=DEFAULT_MODEL, choices=tuple(MODELS))
    tune.add_argument(
        "--max-drop", type=max_drop_points, required=True, metavar="POINTS", help="accuracy drop allowed (points)"
    )
    tune.add_argument("--objective", choices=("speed", "size"), default="speed", help="what wins (default speed)")
    tune.add_argument("--out", type=Path, required=True, metavar="DIR", help="tune.json, tune.md, tune.png, the model")
    tune.add_argument("--budget", type=_minutes, metavar="MINUTES", help="stop searching after this long (best so far)")
    tune.add_argument(
        "--validation",
        type=_whole_number("--validation", 1, "a number of validation images >= 1 (default 5000)"),
        metavar="N",
        help="validation images, stratified, none of them calibrating (default 5000, or all when fewer remain)",
    )
    tune.add_argument(
        "--cells", nargs="+", default=(), metavar="PATTERN", help="search only these cells, e.g. 'nncf-*'"
    )
    tune.add_argument(
        "--calibration-samples",
        type=int,
        nargs="+",
        default=(200, 1000),
        metavar="N",
        help="calibrate each cell on each of these numbers of stratified train images (default 200 1000; "
        "entropy and distribution cells on 200 only)",
    )
    tune.add_argument("--onnx", type=Path, metavar="MODEL.onnx", help="tune YOUR classifier instead (as ptq run)")
    tune.add_argument(
        "--data", type=Path, metavar="DATA.npz", help="with --onnx: `images` and `labels` scored once, at the end"
    )
    tune.add_argument(
        "--calibration",
        type=Path,
        metavar="CALIB.npz",
        help="with --onnx: labelled `images` and `labels`; 200 stratified calibrate, the others validate",
    )
    tune.add_argument("--cache", type=Path, metavar="DIR", help="with --onnx: build cache (default as ptq run's)")
    tune.add_argument("--output", metavar="NAME", help="with --onnx: " + OUTPUT_HELP)
    _source_args(tune)

    run = sub.add_parser(
        "run",
        help="quantize YOUR ONNX classifier with every ONNX backend's cells, check and score each",
        description="Quantize an ONNX classifier with every cell of every backend that takes ONNX ("
        + ", ".join(b.name for b in BACKENDS.values() if b.source == "onnx")
        + "), score each on every ONNX runtime against the model's own FP32 accuracy, run the suite's checks "
        "(8-bit graph and dtypes, size, per-class collapse, accuracy within --max-drop), and write results.json, "
        "results.md, plots and the quantized models into --out.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--onnx", required=True, type=Path, metavar="MODEL.onnx", help="the FP32 classifier")
    run.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DATA.npz",
        help="`images` exactly as the model's input takes them (layout, dtype, range) and `labels` (class ids): "
        "they score every model",
    )
    run.add_argument(
        "--calibration",
        type=Path,
        metavar="CALIB.npz",
        help="`images` (and optionally `labels`, to stratify) to calibrate from; default: a stratified subset "
        "of --data, reported as such",
    )
    run.add_argument(
        "--max-drop",
        type=max_drop_points,
        default=MAX_ACCURACY_DROP_POINTS,
        metavar="POINTS",
        help=f"accuracy drop against FP32 (same runtime) that fails a cell (default {MAX_ACCURACY_DROP_POINTS:g})",
    )
    run.add_argument("--out", required=True, type=Path, metavar="DIR", help="report folder (new, or an earlier run's)")
    run.add_argument(
        "--samples",
        type=_whole_number("--samples", 1, "a number of calibration images >= 1 (default 200)"),
        default=200,
        help="calibration images, stratified when labelled (default 200)",
    )
    run.add_argument("--seed", type=SEED, default=42, help="calibration sampling seed (default 42)")
    run.add_argument(
        "--jobs",
        type=_whole_number("--jobs", 1, "a number of parallel builds >= 1 (e.g. 2)"),
        default=1,
        metavar="N",
        help="build N cells in parallel (default 1)",
    )
    run.add_argument(
        "--cells",
        nargs="+",
        default=(),
        metavar="PATTERN",
        help="only the cells matching a pattern, e.g. 'onnxruntime-u8s8-*' 'nncf-*' (default: all)",
    )
    run.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="where built models and predictions are kept (default $PTQ_CACHE_DIR/run, ~/.cache/ptq-suite/run)",
    )
    run.add_argument("--output", metavar="NAME", help=OUTPUT_HELP)

    compare = sub.add_parser(
        "compare",
        help="per cell, what changed between two baseline folders (e.g. before and after an upgrade)",
        description="Baselines are tests/baselines/<id>/<subject>.yml/.npy, the id naming the CPU and the library "
        "versions a subject depends on; a run under new versions writes them under a new id. This compares the "
        "subjects found in both folders.",
    )
    compare.add_argument("old", type=Path, help="baseline folder of the old library stack")
    compare.add_argument("new", type=Path, help="baseline folder of the new library stack")
    compare.add_argument("--cifar10-dir", metavar="DIR", help="the cifar-10-batches-py folder (for the labels)")
    return parser


RUN_EPILOG = """\
exit status: 0 every check passes on every cell not known to fail; 1 a check fails (named above the
table); 2 bad input (a file that is not an ONNX model, images the model does not take, labels out of
range, ...), with a message that names the thing and the fix. Nothing is written to --out unless the
run completes; built models are cached, so a second run only re-scores what changed.

example, a PyTorch classifier exported with a dynamic batch and its test images saved as the model takes them:
  torch.onnx.export(net, (x,), "net.onnx", dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
  np.savez("test.npz", images=x_test.astype(np.float32), labels=y_test)   # e.g. NCHW, scaled to [0, 1]
  ptq run --onnx net.onnx --data test.npz --out net_report/ --jobs 2
"""


def _workspace(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ptq_core.workspace import Workspace

    return Workspace.locate(args.cifar10_dir, args.resnet8_h5, args.models_dir)


def _prepare(args: argparse.Namespace) -> None:
    from ptq_core.eval import evaluate

    ws = _workspace(args)
    test = ws.split("test")
    print(f"CIFAR-10 test split verified: {ws.cifar10_dir} ({len(test)} images)")
    print(f"ResNet8 weights verified:     {ws.resnet8_h5}")
    for fmt in FORMATS:
        path = ws.fp32(fmt)
        result = evaluate(path, test.images, test.labels)
        print(f"{path}: {result.accuracy:.2%} ({result.correct}/{result.total})")


def _quantize(args: argparse.Namespace) -> None:
    import os
    import shutil

    cell = Cell(args.backend, args.dtype, args.calibrator, args.granularity, args.model)
    config = CalibrationConfig(args.samples, args.seed, args.split)
    suffix = FORMATS[cell.backend_spec.format].suffix
    if args.out and args.out.suffix != suffix:
        raise PTQError(f"--out {args.out}: {cell.backend} writes {suffix} files, name it e.g. {args.out.stem}{suffix}")
    ws = _workspace(args)
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


def _evaluate(args: argparse.Namespace) -> None:
    from ptq_core.cifar10 import load_split
    from ptq_core.eval import evaluate
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


def _report(args: argparse.Namespace) -> int:
    from ptq_core import render, report
    from ptq_core.results import best_cell, failed_evaluations
    from ptq_core.speed import latest_benchmarks

    if args.merge:
        parts = []
        for folder in args.merge:
            try:
                parts.append(json.loads((folder / "results.json").read_text()))
            except (OSError, ValueError) as exc:
                raise PTQError(
                    f"--merge {folder}: no readable results.json ({exc}): pass shards' --ptq-report folders"
                ) from exc
        results = report.merge(parts, [str(f) for f in args.merge])
    else:
        results = report.build(
            _workspace(args), studies=not args.no_studies, benchmarks=args.benchmarks or latest_benchmarks()
        )
    paths = render.write(results, args.out)
    if args.readme:
        dest = args.readme.parent / "tests" / "baselines" / "accuracy.png"
        render.update_readme(args.readme, results, args.out / "accuracy.png", dest)
        paths += [args.readme, dest]
    for path in paths:
        print(path)
    best = best_cell(results)
    if best is not None:
        print(f"best cell: {best['cell']} {best['accuracy']:.2%} ({best['delta_points']:+.2f} points vs FP32)")
    broken = failed_evaluations(results)
    for line in broken:
        print(f"FAILED evaluation {line}")
    return 1 if broken or best is None else 0


def _compare(args: argparse.Namespace) -> None:
    from ptq_core.baselines import diff
    from ptq_core.cifar10 import load_split
    from ptq_core.sources import find_cifar10

    for folder in (args.old, args.new):
        if not folder.is_dir():
            raise PTQError(f"{folder} is not a baseline folder: pass two folders under tests/baselines/")
    rows = diff(args.old, args.new, load_split(find_cifar10(args.cifar10_dir), "test").labels)
    if not rows:
        raise PTQError(f"{args.old.name} and {args.new.name} share no subject: compare folders of the same cells")
    print("| subject | old correct | new correct | changed predictions | now wrong | now right |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['subject']} | {r['old_correct']} | {r['new_correct']} | {r['changed_predictions']} | "
            f"{r['lost']} | {r['gained']} |"
        )


def _bench(args: argparse.Namespace) -> int:
    from ptq_core import bench

    if args.out:
        check_replaceable(args.out, "bench", keep={"--models-dir": args.models_dir})  # before a minute of timing
    ws = _workspace(args)
    result = bench.measure(ws, args.model, rounds=args.rounds)
    text = bench.markdown(result)
    if args.ort_attempts:
        import numpy as np

        from ptq_core.matrix import Cell

        result["ort_attempts"] = bench.ort_attempts(ws, args.model, rounds=args.rounds)
        images = np.ascontiguousarray(ws.split("test").images[:256], dtype=np.float32)
        result["ort_profile"] = bench.op_profile(ws.quantized(Cell("onnxruntime", "u8s8", model=args.model)), images)
        text += "\n" + bench.attempts_markdown(result["ort_attempts"], result["ort_profile"])
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


def _tune(args: argparse.Namespace) -> int:
    from ptq_core import tune, tune_report

    inputs = {"--onnx": args.onnx, "--data": args.data, "--calibration": args.calibration, "--cache": args.cache}
    check_replaceable(args.out, "tune", keep={**inputs, "--models-dir": args.models_dir})  # before the search
    if args.onnx is None:
        if args.data or args.calibration or args.output:
            raise PTQError("--data, --calibration and --output go with --onnx MODEL.onnx (your classifier)")
        ws, model = _workspace(args), args.model
    else:
        if args.data is None or args.calibration is None:
            raise PTQError(
                "ptq tune --onnx needs --data DATA.npz (scored once, at the end) and --calibration CALIB.npz "
                "(labelled: it calibrates and validates)"
            )
        from ptq_core.run import RunInputs

        ws = RunInputs(args.onnx, args.data, args.calibration, cache_dir=args.cache, output=args.output).open()
        model = ws.model.name
    result = tune.tune(
        ws,
        args.max_drop,
        model,
        args.objective,
        args.budget,
        args.validation,
        tuple(args.cells),
        calibration_samples=tuple(args.calibration_samples),
    )
    for path in tune_report.write(result, args.out):
        print(path)
    print(tune_report.markdown(result).split("\n\n| candidate")[0])
    for failure in result["failed_candidates"]:
        print(f"FAILED candidate {failure['candidate']}: {failure['outcome']}: {failure['reason']}")
    return 0 if "chosen" in result and not result["failed_candidates"] else 1


def _run(args: argparse.Namespace) -> int:
    from ptq_core.run import RunInputs, failures, run, summary

    inputs = RunInputs(args.onnx, args.data, args.calibration, args.samples, args.seed, args.cache, args.output)
    results, outcomes = run(inputs, args.out, args.max_drop, args.jobs, tuple(args.cells))
    print("\n".join(summary(results, outcomes)))
    print(f"report: {args.out / 'results.md'}")
    failed = failures(outcomes)
    for o in failed:
        print(f"FAILED {o.check} {o.message}")
    for line in results["failed_evaluations"]:
        print(f"FAILED evaluation {line}")
    return 1 if failed or results["failed_evaluations"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        commands = {
            "run": _run,
            "bench": _bench,
            "tune": _tune,
            "prepare": _prepare,
            "quantize": _quantize,
            "evaluate": _evaluate,
            "report": _report,
            "compare": _compare,
        }
        status: int = commands[args.command](args) or 0  # type: ignore[operator]
    except PTQError as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    except EvaluationFailed as exc:  # a runtime failed where the command cannot go on without it: a result
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
