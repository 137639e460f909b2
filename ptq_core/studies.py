"""Calibration studies beside the matrix: the test-split protocol, calibration size, and per-layer SQNR."""

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


TEST_SPLIT_PROTOCOL = CalibrationConfig(split="test")  # the seed's protocol: 200 stratified test images


def calibration_studies(ws: Workspace) -> dict[str, list[dict[str, Any]]]:
    """The test-split protocol beside the train-split default, and accuracy against calibration size."""
    test = ws.split("test")

    def measure(cell: Cell, config: CalibrationConfig) -> dict[str, Any]:
        predictions = predictions_on_test(ws, ws.quantized(cell, config))
        fp32 = predictions_on_test(ws, ws.fp32(cell.backend_spec.format, cell.model))
        held_out = ws.calibration(config).held_out(len(test))
        hits = predictions == test.labels
        return {
            "cell": cell.id,
            "split": config.split,
            "num_samples": config.num_samples,
            "accuracy": float(hits.mean()),
            "heldout_accuracy": float(hits[held_out].mean()),
            "heldout_fp32_accuracy": float((fp32 == test.labels)[held_out].mean()),
            "heldout_images": int(held_out.sum()),
        }

    from ptq_core.sqnr import activation_sqnr

    sqnr = activation_sqnr(ws.fp32("onnx"), ws.quantized(SQNR_CELL), test.images[:SQNR_IMAGES].astype(np.float32))
    return {
        "sqnr": [{"cell": SQNR_CELL.id, "tensor": r.tensor, "op_type": r.op_type, "sqnr_db": r.sqnr_db} for r in sqnr],
        "test_split": [
            {**measure(cell, TEST_SPLIT_PROTOCOL), "default_accuracy": measure(cell, CalibrationConfig())["accuracy"]}
            for cell in DEFAULT_CELLS
        ],
        "size_sweep": [measure(cell, CalibrationConfig(num_samples=n)) for cell in SWEEP_CELLS for n in SWEEP_SIZES],
    }
