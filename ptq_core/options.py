"""Validators of option values, shared by the commands, their functions and the pytest plugin: a bad value is
refused at parse time (exit 2, before any work) with a message naming the option and what to give."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ptq_core.errors import PTQError


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


def whole_number(option: str, low: int, what: str) -> Callable[[str], int]:
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


def minutes(text: str) -> float:
    """``ptq tune --budget``: a positive number of minutes."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise OptionError(f"--budget {text}: give the minutes the search may take, a number > 0 (e.g. 30)")
    return value


SEED = whole_number("--seed", 0, "a calibration sampling seed >= 0 (e.g. 42)")


def shard(text: str) -> tuple[int, int]:
    """``ptq run --shard K/N``: the K-th of N parts of the cells, 1 <= K <= N."""
    parts = text.split("/")
    try:
        k, n = (int(x) for x in parts) if len(parts) == 2 else (0, 0)
    except ValueError:
        k, n = 0, 0
    if not 1 <= k <= n:
        raise OptionError(f"--shard {text}: give K/N, the K-th of N parts of the cells, 1 <= K <= N (e.g. 1/2)")
    return k, n
