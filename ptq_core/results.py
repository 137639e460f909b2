"""Every cell against FP32 on every runtime it runs on: what the report, the baselines and ``ptq run`` read.

``collect`` builds (or reuses) each artifact, scores it on the test split on each runtime of its format,
and compares it with the FP32 model measured on the same runtime.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ptq_core import cache
from ptq_core.calibration import CalibrationConfig
from ptq_core.checks import MAX_ACCURACY_DROP_POINTS, MIN_PAYLOAD_RATIO, known_failure
from ptq_core.formats import FORMATS
from ptq_core.matrix import CELLS, Cell
from ptq_core.models import DEFAULT_MODEL
from ptq_core.platform import cpu_flags, libraries_of
from ptq_core.predictions import predictions_on_test
from ptq_core.runtimes import runtimes_for
from ptq_core.stats import accuracy_row
from ptq_core.workspace import ArtifactStore


def _primary(fmt: str) -> str:
    return runtimes_for(fmt)[0].name


def collect(
    ws: ArtifactStore, cells: tuple[Cell, ...] = CELLS, max_drop: float = MAX_ACCURACY_DROP_POINTS
) -> dict[str, Any]:
    """Build (or reuse) and evaluate every cell; everything the report and the baselines need."""
    labels = ws.split("test").labels
    calib = ws.calibration(CalibrationConfig())
    held_out = calib.held_out(len(labels))
    fmts = sorted({c.backend_spec.format for c in cells} | {"onnx"})
    models = sorted({c.model for c in cells}, key=lambda m: m != DEFAULT_MODEL)
    fp32 = {(model, fmt): ws.fp32(fmt, model) for model in models for fmt in fmts}
    fp32_pred = {
        (model, fmt, rt.name): predictions_on_test(ws, path, rt.name, model)
        for (model, fmt), path in fp32.items()
        for rt in runtimes_for(fmt)
    }

    def fp32_summary(model: str) -> dict[str, Any]:
        reference = fp32_pred[(model, "onnx", _primary("onnx"))]
        return {
            "file_bytes": {fmt: p.stat().st_size for (m, fmt), p in fp32.items() if m == model},
            "runtimes": {
                rt: {"format": fmt, **accuracy_row(pred, labels, pred, held_out)}
                for (m, fmt, rt), pred in fp32_pred.items()
                if m == model
            },
            **accuracy_row(reference, labels, reference, held_out),
        }

    fp32_found = {key: FORMATS[key[1]].inspect(path) for key, path in fp32.items()}
    rows = []
    preds: dict[str, np.ndarray] = {}
    twins: dict[str, str] = {}
    for cell in cells:
        fmt = cell.backend_spec.format
        path = ws.quantized(cell)
        found, base = FORMATS[fmt].inspect(path), fp32_found[(cell.model, fmt)]
        if cell.backend_spec.twin is not None:
            twins[cell.id] = cell.backend_spec.twin(cell).id
        on: dict[str, Any] = {}
        for rt in runtimes_for(fmt):
            pred = predictions_on_test(ws, path, rt.name, cell.model)
            on[rt.name] = accuracy_row(pred, labels, fp32_pred[(cell.model, fmt, rt.name)], held_out)
            on[rt.name]["checked"] = rt.checked
            on[rt.name]["libraries"] = list(libraries_of(cell, rt.name))
            if rt.name != _primary(fmt):
                on[rt.name]["agreement_primary"] = float((pred == preds.get(cell.id, pred)).mean())
            else:
                preds[cell.id] = pred
        primary = on[_primary(fmt)]
        rows.append(
            {
                "cell": cell.id,
                "model": cell.model,
                "backend": cell.backend,
                "dtype": cell.dtype,
                "calibrator": cell.calibrator,
                "granularity": cell.granularity,
                "artifact": str(path),
                "runtime": _primary(fmt),
                "file_bytes": found.file_bytes,
                "file_ratio": base.file_bytes / found.file_bytes,
                "payload_ratio": base.float_weight_bytes / found.payload_bytes if found.payload_bytes else 0.0,
                "expected_failure": known_failure(cell, "check_accuracy_vs_fp32", _primary(fmt)),
                **{k: v for k, v in primary.items() if k not in ("checked", "libraries")},
                "runtimes": on,
                "passes": all(r["delta_points"] >= -max_drop for r in on.values() if r["checked"]),
            }
        )
    for row in rows:
        twin = twins.get(row["cell"])
        if twin in preds:
            row["twin"] = twin
            row["agreement_twin"] = float((preds[row["cell"]] == preds[twin]).mean())
    return {
        "versions": cache.library_versions(
            {lib for c in cells for rt in runtimes_for(c.backend_spec.format) for lib in libraries_of(c, rt.name)}
        ),
        "cpu_flags": cpu_flags(),
        "calibration": {
            "num_samples": calib.config.num_samples,
            "seed": calib.config.seed,
            "split": calib.config.split,
            "indices_sha256": hashlib.sha256(calib.indices.tobytes()).hexdigest(),
        },
        "model": models[0],
        "fp32": fp32_summary(models[0]),
        "models": {model: fp32_summary(model) for model in models},
        "min_payload_ratio": MIN_PAYLOAD_RATIO,
        "max_drop_points": max_drop,
        "cells": rows,
    }


def best_cell(results: dict[str, Any], model: str | None = None) -> dict[str, Any] | None:
    """The most accurate passing cell of ``model`` (default: the first); ties go to the smaller file."""
    model = model or results.get("model", DEFAULT_MODEL)
    passing = [r for r in results["cells"] if r["passes"] and not r["expected_failure"] and r["model"] == model]
    return max(passing, key=lambda r: (r["correct"], -r["file_bytes"]), default=None)
