"""Every cell against FP32 on every runtime it runs on: what the report, the baselines and ``ptq run`` read.

``collect`` builds (or reuses) each artifact, scores it on the test split on each runtime of its format,
and compares it with the FP32 model measured on the same runtime.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core import cache
from ptq_core.calibration import CalibrationConfig
from ptq_core.checks import MAX_ACCURACY_DROP_POINTS, MIN_PAYLOAD_RATIO
from ptq_core.errors import PTQError
from ptq_core.evaluation import Evaluation, EvaluationFailed, Outcome, failed, reason_of
from ptq_core.formats import FORMATS
from ptq_core.known_failures import EVALUATION, known_failure
from ptq_core.machine import cpu_capability, cpu_flags, libraries_of
from ptq_core.matrix import CELLS, Cell
from ptq_core.models import DEFAULT_MODEL
from ptq_core.predictions import predictions_on_test
from ptq_core.runtimes import get_runtime, runtimes_for
from ptq_core.stats import accuracy_row
from ptq_core.workspace import ArtifactStore

# results.json's layout: 2 gave every runtime entry an ``outcome`` (scored / failed to load / failed while scoring /
# known failure) and its ``reason``, and each cell its primary runtime's ``outcome``; a failed entry has no scores
SCHEMA_VERSION = 2


def _primary(fmt: str) -> str:
    return runtimes_for(fmt)[0].name


def evaluation(
    ws: ArtifactStore,
    path: Path,
    runtime: str,
    model: str,
    held_out: np.ndarray,
    fp32: Evaluation | None = None,
    cell: Cell | None = None,
) -> Evaluation:
    """``path`` on ``runtime`` as a record: scored against ``fp32`` (FP32's own record on the same runtime; None
    for FP32 itself), or failed with the runtime's reason; a failure measured before is a known failure."""
    rt = get_runtime(runtime)
    libraries = libraries_of(cell, runtime) if cell is not None else rt.libraries
    record = functools.partial(Evaluation, runtime, checked=rt.checked, libraries=tuple(libraries))
    if fp32 is not None and not fp32.scored:
        return record(fp32.outcome, f"FP32 {fp32.outcome} on {runtime}, so nothing to compare with: {fp32.reason}")
    labels = ws.split("test").labels
    try:
        pred = predictions_on_test(ws, path, runtime, model)
    except EvaluationFailed as exc:
        known = known_failure(cell, EVALUATION, runtime) if cell is not None else None
        return record(Outcome.KNOWN_FAILURE if known else exc.outcome, exc.reason, known=known)
    reference = fp32.predictions if fp32 is not None and fp32.predictions is not None else pred
    return record(Outcome.SCORED, stats=accuracy_row(pred, labels, reference, held_out), predictions=pred)


def collect(
    ws: ArtifactStore,
    cells: tuple[Cell, ...] = CELLS,
    max_drop: float = MAX_ACCURACY_DROP_POINTS,
    fp32_of: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Build (or reuse) and evaluate every cell on every runtime of its format; everything the report and the
    baselines need. A runtime that fails one evaluation leaves it marked failed, with its reason; the rest go on.
    Long because it is one pass: FP32 on every runtime, each cell on every runtime against it, then the twins."""
    labels = ws.split("test").labels
    calib = ws.calibration(CalibrationConfig())
    held_out = calib.held_out(len(labels))
    fmts = sorted({c.backend_spec.format for c in cells} | {"onnx"})
    # ``fp32_of``: models whose FP32 to report even with no cell left (every cell of a user's model failed to build)
    models = sorted({c.model for c in cells} | set(fp32_of), key=lambda m: m != DEFAULT_MODEL)
    fp32 = {(model, fmt): ws.fp32(fmt, model) for model in models for fmt in fmts}
    fp32_on = {
        (model, fmt, rt.name): evaluation(ws, path, rt.name, model, held_out)
        for (model, fmt), path in fp32.items()
        for rt in runtimes_for(fmt)
    }

    def fp32_summary(model: str) -> dict[str, Any]:
        reference = fp32_on[(model, "onnx", _primary("onnx"))]
        if not reference.scored:
            raise EvaluationFailed(reference.outcome, f"FP32 {model} on {reference.runtime}: {reference.reason}")
        return {
            "file_bytes": {fmt: p.stat().st_size for (m, fmt), p in fp32.items() if m == model},
            "runtimes": {rt: {"format": fmt, **ev.as_json()} for (m, fmt, rt), ev in fp32_on.items() if m == model},
            **(reference.stats or {}),
        }

    fp32_found = {key: FORMATS[key[1]].inspect(path) for key, path in fp32.items()}
    rows: list[dict[str, Any]] = []
    preds: dict[str, np.ndarray] = {}
    twins: dict[str, str] = {}
    failed_builds: dict[str, str] = {}
    for cell in cells:
        try:
            path = ws.quantized(cell)
        except PTQError:
            raise
        except Exception as exc:  # the quantizer raised on this cell: a result, the other cells go on
            failed_builds[cell.id] = f"{cell.backend}: {reason_of(exc)}"
            continue
        fmt = cell.backend_spec.format
        on = {
            rt.name: evaluation(ws, path, rt.name, cell.model, held_out, fp32_on[(cell.model, fmt, rt.name)], cell)
            for rt in runtimes_for(fmt)
        }
        rows.append(_row(cell, path, on, fp32_found[(cell.model, fmt)], max_drop))
        if (predictions := on[_primary(fmt)].predictions) is not None:
            preds[cell.id] = predictions
        if cell.backend_spec.twin is not None:
            twins[cell.id] = cell.backend_spec.twin(cell).id
    for row in rows:
        twin = twins.get(row["cell"])
        if twin in preds and row["cell"] in preds:
            row["twin"] = twin
            row["agreement_twin"] = float((preds[row["cell"]] == preds[twin]).mean())
    return {
        **_header(cells, calib),
        "model": models[0],
        "fp32": fp32_summary(models[0]),
        "models": {model: fp32_summary(model) for model in models},
        "min_payload_ratio": MIN_PAYLOAD_RATIO,
        "max_drop_points": max_drop,
        "cells": rows,
        "failed_builds": failed_builds,
    }


def _header(cells: tuple[Cell, ...], calib: Any) -> dict[str, Any]:
    """What the results were measured with: the schema, the library versions, the CPU and the calibration set."""
    return {
        "schema": SCHEMA_VERSION,
        "versions": cache.library_versions(
            {lib for c in cells for rt in runtimes_for(c.backend_spec.format) for lib in libraries_of(c, rt.name)}
        ),
        "cpu_flags": cpu_flags(),
        "cpu": cpu_capability(),
        "calibration": {
            "num_samples": calib.config.num_samples,
            "seed": calib.config.seed,
            "split": calib.config.split,
            "indices_sha256": hashlib.sha256(calib.indices.tobytes()).hexdigest(),
        },
    }


@dataclass(frozen=True)
class CellResult:
    """A cell's entry in results.json: what it is, its size against FP32's, and its evaluation on each runtime (the
    first runtime's statistics, ``stats``, stand beside the other fields in the json)."""

    cell: str
    model: str
    backend: str
    dtype: str
    calibrator: str
    granularity: str
    artifact: str
    runtime: str  # its format's first runtime
    outcome: str  # that runtime's
    file_bytes: int
    file_ratio: float  # FP32's file over this one's
    payload_ratio: float  # FP32's float weights over this one's weights, scales and zero points
    expected_failure: str | None  # the measured reason its accuracy check fails, if it is known to
    runtimes: dict[str, dict[str, Any]]  # runtime -> its ``Evaluation.as_json()``
    passes: bool  # scored within the allowed drop on every checked runtime
    stats: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        fields = {k: v for k, v in asdict(self).items() if k != "stats"}
        return {**fields, **self.stats}


def _row(cell: Cell, path: Path, on: dict[str, Evaluation], base: Any, max_drop: float) -> dict[str, Any]:
    found = FORMATS[cell.backend_spec.format].inspect(path)
    primary = on[_primary(cell.backend_spec.format)]
    entries = {name: ev.as_json() for name, ev in on.items()}
    for name, ev in on.items():
        if name != primary.runtime and ev.predictions is not None and primary.predictions is not None:
            entries[name]["agreement_primary"] = float((ev.predictions == primary.predictions).mean())
    return CellResult(
        cell=cell.id,
        model=cell.model,
        backend=cell.backend,
        dtype=cell.dtype,
        calibrator=cell.calibrator,
        granularity=cell.granularity,
        artifact=str(path),
        runtime=primary.runtime,
        outcome=str(primary.outcome),
        file_bytes=found.file_bytes,
        file_ratio=base.file_bytes / found.file_bytes,
        payload_ratio=base.float_weight_bytes / found.payload_bytes if found.payload_bytes else 0.0,
        expected_failure=known_failure(cell, "check_accuracy_vs_fp32", primary.runtime),
        runtimes=entries,
        passes=all(ev.scored and (ev.stats or {})["delta_points"] >= -max_drop for ev in on.values() if ev.checked),
        stats=primary.stats or {},
    ).as_json()


def failed_evaluations(results: dict[str, Any]) -> list[str]:
    """``cell on runtime: outcome: reason`` for every evaluation that failed and was not measured to fail."""
    found = [
        f"FP32 {model} on {rt}: {entry['outcome']}: {entry['reason']}"
        for model, summary in results.get("models", {}).items()
        for rt, entry in summary["runtimes"].items()
        if failed(entry)
    ]
    found += [
        f"{cell}: {Outcome.FAILED_TO_BUILD}: {reason}" for cell, reason in results.get("failed_builds", {}).items()
    ]
    found += [
        f"{row['cell']} on {rt}: {entry['outcome']}: {entry['reason']}"
        for row in results["cells"]
        for rt, entry in row["runtimes"].items()
        if failed(entry)
    ]
    return found


def best_cell(results: dict[str, Any], model: str | None = None) -> dict[str, Any] | None:
    """The most accurate passing cell of ``model`` (default: the first); ties go to the smaller file."""
    model = model or results.get("model", DEFAULT_MODEL)
    passing = [r for r in results["cells"] if r["passes"] and not r["expected_failure"] and r["model"] == model]
    return max(passing, key=lambda r: (r["correct"], -r["file_bytes"]), default=None)
