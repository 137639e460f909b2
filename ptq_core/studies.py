"""Calibration studies beside the matrix: train-split calibration, calibration size, and per-layer SQNR."""

from __future__ import annotations

from typing import Any

import numpy as np

from ptq_core.calibration import CalibrationConfig
from ptq_core.matrix import DEFAULT_CELLS, Cell
from ptq_core.predictions import predictions_on_test
from ptq_core.workspace import Workspace

SWEEP_CELLS = (Cell("onnxruntime", "u8s8"), Cell("pytorch", "uint8", "histogram"))
SWEEP_SIZES = (10, 50, 200, 1000)
SQNR_CELL, SQNR_IMAGES = Cell("onnxruntime", "uint8", "entropy", "per_tensor"), 256  # the lossiest working cell


def calibration_studies(ws: Workspace) -> dict[str, list[dict[str, Any]]]:
    """Calibration from the train split (no test-set leakage), and accuracy against calibration size."""
    test = ws.split("test")

    def measure(cell: Cell, config: CalibrationConfig) -> dict[str, Any]:
        hits = predictions_on_test(ws, ws.quantized(cell, config)) == test.labels
        row = {
            "cell": cell.id,
            "split": config.split,
            "num_samples": config.num_samples,
            "accuracy": float(hits.mean()),
        }
        if config.split == "test":
            held_out = np.ones(len(hits), bool)
            held_out[ws.calibration(config).indices] = False
            row["heldout_accuracy"] = float(hits[held_out].mean())
        return row

    from ptq_core.sqnr import activation_sqnr

    sqnr = activation_sqnr(ws.fp32("onnx"), ws.quantized(SQNR_CELL), test.images[:SQNR_IMAGES].astype(np.float32))
    return {
        "sqnr": [{"cell": SQNR_CELL.id, "tensor": r.tensor, "op_type": r.op_type, "sqnr_db": r.sqnr_db} for r in sqnr],
        "train_split": [measure(cell, CalibrationConfig(split="train")) for cell in DEFAULT_CELLS],
        "size_sweep": [measure(cell, CalibrationConfig(num_samples=n)) for cell in SWEEP_CELLS for n in SWEEP_SIZES],
    }
