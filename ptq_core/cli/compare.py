"""``ptq compare``: per cell, what changed between two baseline folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ptq_core.errors import PTQError

NAME = "compare"
EXAMPLE = """python -m ptq_core compare tests/baselines/OLD-STACK tests/baselines/NEW-STACK
what changed between two library stacks' baselines: correct counts, flipped images"""


def add(sub: Any) -> None:
    parser = sub.add_parser(
        NAME,
        help="per cell, what changed between two baseline folders (e.g. before and after an upgrade)",
        description="Baselines are tests/baselines/<id>/<subject>.yml/.npy, the id naming the CPU and the library "
        "versions a subject depends on; a run under new versions writes them under a new id. This compares the "
        "subjects found in both folders.",
    )
    parser.add_argument("old", type=Path, help="baseline folder of the old library stack")
    parser.add_argument("new", type=Path, help="baseline folder of the new library stack")
    parser.add_argument("--cifar10-dir", metavar="DIR", help="the cifar-10-batches-py folder (for the labels)")


def main(args: argparse.Namespace) -> None:
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
