"""``ptq`` / ``python -m ptq_core``: one module per command, each declaring ``NAME``, ``EXAMPLE``, ``add`` (its
options) and ``main`` (what it does; an int is the exit status)."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence

from ptq_core.backends import BACKENDS
from ptq_core.cli import bench, compare, evaluate, explain, prepare, quantize, report, run, tune
from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed
from ptq_core.runtimes import runtimes_for

COMMANDS = (prepare, quantize, evaluate, report, run, bench, tune, compare, explain)

SOURCES = """\
Data and weights are found in this order: --cifar10-dir / --resnet8-h5, then $PTQ_CIFAR10_DIR /
$PTQ_RESNET8_H5, then the cache $PTQ_CACHE_DIR (default ~/.cache/ptq-suite), else downloaded from the
official sources and verified by checksum.
"""


def examples() -> str:
    lines = ["subcommands, one example each:"]
    for command in COMMANDS:
        first, *rest = command.EXAMPLE.splitlines()
        lines += [f"  {command.NAME:<10} {first}", *(f"  {'':<10} {line}" for line in rest)]
    return "\n".join([*lines, "", SOURCES])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptq",
        description=f"Static post-training quantization of ResNet8 (CIFAR-10) with {', '.join(BACKENDS)}, scored on "
        f"{', '.join(r.name for r in runtimes_for())}: what 8 bits cost in accuracy.",
        epilog=examples(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(c.NAME for c in COMMANDS) + "}")
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = next(c for c in COMMANDS if c.NAME == args.command)
    try:
        status: int = command.main(args) or 0
    except PTQError as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    except EvaluationFailed as exc:  # a runtime failed where the command cannot go on without it: a result
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return 1
    return status


def console() -> None:
    """``ptq`` and ``python -m ptq_core``: main's status as the exit code, without the interpreter's last garbage
    collections over what is still alive (about 1 s with torch and OpenVINO loaded)."""
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    console()
