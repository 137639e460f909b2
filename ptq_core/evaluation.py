"""One model on one runtime as a typed record: scored, or failed with the library's own reason.

A runtime that cannot load or compile an artifact, raises while scoring, or returns non-finite scores
fails that evaluation; every other evaluation goes on. The record is what results.json/md, the terminal
summaries, ``ptq report --merge``, ``ptq run``, ``ptq tune`` and ``ptq bench`` read and write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class Outcome(StrEnum):
    SCORED = "scored"
    FAILED_TO_BUILD = "failed to build"  # the quantizer raised on the cell: there is no artifact to evaluate
    FAILED_TO_LOAD = "failed to load"  # the runtime cannot load or compile the artifact
    FAILED_WHILE_SCORING = "failed while scoring"  # it raised on a batch, or answered non-finite scores
    KNOWN_FAILURE = "known failure"  # a failure measured on this model, platform and library release


class EvaluationFailed(Exception):
    """A runtime failed one evaluation: not the user's input, a result to record (exit 1, never 2)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(f"{outcome}: {reason}")
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True)
class Evaluation:
    """A model file on one runtime: its outcome, the library's reason when it failed, its scores when it did not."""

    runtime: str
    outcome: Outcome
    reason: str = ""
    checked: bool = True  # False: reported beside the others, never asserted
    libraries: tuple[str, ...] = ()
    stats: dict[str, Any] | None = None  # stats.accuracy_row against FP32 on the same runtime, when scored
    known: str | None = None  # the measured known failure it matches, if any
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def scored(self) -> bool:
        return self.outcome is Outcome.SCORED

    @property
    def failed(self) -> bool:
        """Failed, and not as measured before: it counts toward the exit status."""
        return self.outcome in (Outcome.FAILED_TO_LOAD, Outcome.FAILED_WHILE_SCORING)

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "reason": self.reason,
            "checked": self.checked,
            "libraries": list(self.libraries),
            **({"known_failure": self.known} if self.known else {}),
            **(self.stats or {}),
        }


def outcome_of(entry: dict[str, Any]) -> Outcome:
    """The outcome of a runtime's entry in results.json (files written before outcomes existed: scored)."""
    return Outcome(entry.get("outcome", Outcome.SCORED))


def scored(entry: dict[str, Any]) -> bool:
    return outcome_of(entry) is Outcome.SCORED


def failed(entry: dict[str, Any]) -> bool:
    return outcome_of(entry) in (Outcome.FAILED_TO_LOAD, Outcome.FAILED_WHILE_SCORING)


_LOCATION = re.compile(r"[\w./-]+\.(?:h|hpp|hh|c|cc|cpp|cxx):\d+:?")
_FRAME = re.compile(r"^(?:Exception from )?[\w./-]+\.(?:h|hpp|cc|cpp):\d+:?$")  # OpenVINO's stack of locations
_SIGNATURE = re.compile(r"^(?:[\w<>,*&~]+ )*[\w<>~]*::[\w:<>~]*\(")  # void ns::f(...) after ONNX Runtime's location


def reason_of(exc: BaseException, limit: int = 400) -> str:
    """The part of a library's error that names the cause (IR version, opset, op, kernel), without the source
    locations and C++ signatures around it: ONNX Runtime puts the cause after ``file.cc:N signature(...)``,
    OpenVINO after a stack of ``Exception from file.cpp:N:`` lines. Not its first N characters."""
    lines = [_without_location(x.strip()) for x in str(exc).splitlines() if x.strip() and not _FRAME.match(x.strip())]
    text = re.sub(r"\s+", " ", " ".join(x for x in lines if x)) or str(exc).strip()
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_location(line: str) -> str:
    """``Load model failed:/src/x.h:46 void ns::f(int) Opset 30 ...`` -> ``Load model failed: Opset 30 ...``."""
    found = list(_LOCATION.finditer(line))
    if not found:
        return line
    head, rest = line[: found[-1].start()].rstrip(" :"), line[found[-1].end() :].strip()
    if _SIGNATURE.match(rest):
        depth = 0
        for i, char in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == ")" and depth == 0:
                rest = rest[i + 1 :].strip()
                break
    head = re.sub(r"\s+at$", "", head)
    return f"{head}: {rest}" if head and rest else head or rest


def non_finite_reason(scores: np.ndarray) -> str | None:
    """None when every score is finite; else how many images got NaN or inf."""
    bad = ~np.isfinite(scores).reshape(len(scores), -1).all(axis=1)
    if not bad.any():
        return None
    return f"{int(bad.sum())} of {len(scores)} images got non-finite scores (NaN or inf)"
