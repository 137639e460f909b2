"""Committed prediction baselines: what a run is compared with, and what changed between two library stacks.

A baseline is ``<root>/<baseline id>/<subject>.yml`` (correct count, agreement with FP32, predictions
digest) beside ``<subject>.npy`` (the 10,000 predicted classes). The baseline id names the CPU capability
and the versions of the libraries the subject depends on (``ptq_core.machine.baseline_id``), so an
upgrade of one library meets new ids only for the cells that use it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ptq_core.stats import class_ids


class BaselineChanged(UserWarning):
    """Predictions differ from another library stack's baseline, within tolerance or for the better."""


@dataclass(frozen=True)
class Flips:
    lost: np.ndarray  # indices right in the baseline, wrong now
    gained: np.ndarray  # wrong in the baseline, right now

    @classmethod
    def between(cls, old: np.ndarray, new: np.ndarray, labels: np.ndarray) -> Flips:
        return cls(np.flatnonzero((old == labels) & (new != labels)), np.flatnonzero((old != labels) & (new == labels)))

    @property
    def net(self) -> int:
        return len(self.gained) - len(self.lost)

    def __str__(self) -> str:
        return (
            f"{len(self.lost)} images now wrong (first: {self.lost[:10].tolist()}), "
            f"{len(self.gained)} now right (first: {self.gained[:10].tolist()})"
        )


@dataclass(frozen=True)
class Verdict:
    passed: bool
    write: bool  # write this run's baseline (for review) under its own id
    message: str = ""


def record(correct: int, agreement_fp32: float, digest: str) -> dict[str, Any]:
    return {"correct": int(correct), "agreement_fp32": round(float(agreement_fp32), 6), "predictions_sha256": digest}


def cpu_of(baseline_id: str) -> str:
    """The machine and CPU capability an id starts with (``x86_64-avx2``): what picks a runtime's int8 kernels."""
    return "-".join(baseline_id.split("-")[:2])


def others(root: Path, subject: str, here: Path) -> list[Path]:
    """Baselines of ``subject`` under every other id of this CPU kind (what a library upgrade is judged against);
    where this CPU kind has none, under every other id. Another CPU's kernels round differently: ORT's u8s8 ones
    saturate without VNNI, measured 1.25-2.57 points below the VNNI and AMX baselines on an AVX2-only EPYC."""
    found = [p for p in sorted(root.glob(f"*/{subject}.yml")) if p.parent != here]
    return [p for p in found if cpu_of(p.parent.name) == cpu_of(here.name)] or found


def judge(
    root: Path,
    here: Path,
    subject: str,
    data: dict[str, Any],
    predictions: np.ndarray,
    labels: np.ndarray,
    tolerance: float,
) -> Verdict:
    """Compare a run with the committed baselines of ``subject``.

    * Under its own id: the predictions must be identical (same inputs and versions are deterministic).
    * Under other ids only: identical predictions to one of them pass; a drop of more than ``tolerance``
      points against any fails, naming the flipped images; a smaller drop, or a gain, passes with a
      :class:`BaselineChanged` warning. Passing runs write their baseline for review.
    * No baseline at all: written, and the run fails once so that someone reviews it.
    """
    own = here / f"{subject}.yml"
    if own.exists():
        old = yaml.safe_load(own.read_text())
        if old == data:
            return Verdict(True, False)
        flips = Flips.between(np.load(own.with_suffix(".npy")), predictions, labels)
        return Verdict(
            False,
            False,
            f"{subject} changed under the same library versions ({here.name}): {old['correct']} -> "
            f"{data['correct']} correct; {flips}. Same inputs and versions should give identical predictions: if "
            "the change is intended, run `pytest --force-regen`, review and commit the diff.",
        )
    elsewhere = others(root, subject, here)
    if not elsewhere:
        return Verdict(False, True, f"{subject}: no baseline yet; wrote {own}: review and commit it.")
    changes = []
    for path in elsewhere:
        old = yaml.safe_load(path.read_text())
        if old["predictions_sha256"] == data["predictions_sha256"]:
            return Verdict(True, True)
        flips = Flips.between(np.load(path.with_suffix(".npy")), predictions, labels)
        drop = (old["correct"] - data["correct"]) * 100 / len(labels)
        if drop > tolerance:
            return Verdict(
                False,
                False,
                f"{subject}: {data['correct']} correct vs {old['correct']} under {path.parent.name}: a drop of "
                f"{drop:.2f} points (tolerance {tolerance}). {flips}"
                + (
                    ""
                    if cpu_of(path.parent.name) == cpu_of(here.name)
                    else f". No baseline of this CPU kind ({cpu_of(here.name)}) yet, so it is judged against another "
                    "CPU's: where this CPU's kernels explain the drop, write its baselines with `pytest "
                    "tests/test_baseline.py --force-regen`, review them and commit them"
                ),
            )
        changes.append(f"{old['correct']} -> {data['correct']} against {path.parent.name} ({flips})")
    message = f"{subject} differs from every other library stack's baseline: " + "; ".join(changes)
    warnings.warn(BaselineChanged(message), stacklevel=2)
    return Verdict(True, True, message)


def write(here: Path, subject: str, data: dict[str, Any], predictions: np.ndarray) -> None:
    """The predictions, then the record that makes them a baseline; each through a temporary name."""
    here.mkdir(parents=True, exist_ok=True)
    for name, write_to in (
        (f"{subject}.npy", lambda f: np.save(f, class_ids(predictions))),
        (f"{subject}.yml", lambda f: f.write(yaml.safe_dump(data, sort_keys=True).encode())),
    ):
        tmp = here / f".{name}.tmp"
        with tmp.open("wb") as f:
            write_to(f)
        os.replace(tmp, here / name)


def diff(old_dir: Path, new_dir: Path, labels: np.ndarray) -> list[dict[str, Any]]:
    """Per subject baselined in both folders (two library stacks): correct counts and the images that flipped."""
    rows = []
    for old_yml in sorted(old_dir.glob("*.yml")):
        new_yml = new_dir / old_yml.name
        if not new_yml.exists():
            continue
        old, new = yaml.safe_load(old_yml.read_text()), yaml.safe_load(new_yml.read_text())
        old_pred, new_pred = np.load(old_yml.with_suffix(".npy")), np.load(new_yml.with_suffix(".npy"))
        flips = Flips.between(old_pred, new_pred, labels)
        rows.append(
            {
                "subject": old_yml.stem,
                "old_correct": old["correct"],
                "new_correct": new["correct"],
                "changed_predictions": int((old_pred != new_pred).sum()),
                "lost": len(flips.lost),
                "gained": len(flips.gained),
            }
        )
    return rows
