"""``ptq report``: every cell against FP32, or shards' reports merged into one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ptq_core.cli.common import source_args, workspace
from ptq_core.errors import PTQError

NAME = "report"
EXAMPLE = """python -m ptq_core report --out report/
build and evaluate every cell, write results.json, results.md and plots
(--merge shard1/ shard2/: one report from shards run with pytest --splits N --group i --ptq-report)"""


def add(sub: Any) -> None:
    parser = sub.add_parser(NAME, help="every cell against FP32: results.json, results.md, plots")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    parser.add_argument(
        "--no-studies", action="store_true", help="skip the test-split protocol, calibration-size and SQNR studies"
    )
    parser.add_argument(
        "--no-blame",
        action="store_true",
        help="do not say which layers each dropping cell loses its accuracy in (ptq explain measures one)",
    )
    parser.add_argument(
        "--benchmarks",
        type=Path,
        metavar="JSON",
        help="a pytest-benchmark run to report speed from (default: the newest in .benchmarks/)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        metavar="README.md",
        help="also fill the README's results section with the summary and plot, and docs/results.md's with the table",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="combine shards' reports (pytest --splits N --group i --ptq-report DIR) into one, building nothing",
    )
    source_args(parser)


def main(args: argparse.Namespace) -> int:
    from ptq_core import render, report
    from ptq_core.blame_report import headlines
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
            workspace(args),
            studies=not args.no_studies,
            benchmarks=args.benchmarks or latest_benchmarks(),
            blame=not args.no_blame,
            say=lambda line: print(f"ptq report: {line}", file=sys.stderr, flush=True),
        )
    paths = render.write(results, args.out)
    if args.readme:
        dest = args.readme.parent / "tests" / "baselines" / "accuracy.png"
        paths += render.update_readme(args.readme, results, args.out / "accuracy.png", dest)
    for path in paths:
        print(path)
    best = best_cell(results)
    if best is not None:
        print(f"best cell: {best['cell']} {best['accuracy']:.2%} ({best['delta_points']:+.2f} points vs FP32)")
    broken = failed_evaluations(results)
    for line in broken:
        print(f"FAILED evaluation {line}")
    print("\n".join(headlines(results)))
    failed_checks = [c for c in results.get("checks", []) if not c["passed"] and not c["expected_failure"]]
    for c in failed_checks:  # merged ptq run reports: the exit status a single run gives
        print(f"FAILED {c['check']} {c['message']}")
    return 1 if broken or failed_checks or best is None else 0
