"""Is a quantized model really worse, or within noise? Wilson intervals and the exact McNemar test."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy ``correct / total``."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total > 0, got {correct}/{total}")
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def mcnemar_exact(reference_hits: np.ndarray, candidate_hits: np.ndarray) -> tuple[int, int, float]:
    """(only reference right, only candidate right, two-sided exact p) on paired per-image outcomes."""
    reference_hits = np.asarray(reference_hits, dtype=bool)
    candidate_hits = np.asarray(candidate_hits, dtype=bool)
    if reference_hits.shape != candidate_hits.shape:
        raise ValueError(f"paired outcomes differ in shape: {reference_hits.shape} vs {candidate_hits.shape}")
    b = int((reference_hits & ~candidate_hits).sum())
    c = int((~reference_hits & candidate_hits).sum())
    n = b + c
    if n == 0:
        return b, c, 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return b, c, min(1.0, 2 * tail / 2**n)  # exact integer arithmetic, correctly rounded at the end


def class_ids(predictions: np.ndarray) -> np.ndarray:
    """Predicted class ids in the smallest unsigned type that holds them: uint8 up to 255 (so a 10-class model's
    digest is what it always was), uint16 past it, where uint8 would wrap class 256 onto class 0."""
    return predictions.astype(np.min_scalar_type(int(predictions.max(initial=0))))


def accuracy_row(
    predictions: np.ndarray, labels: np.ndarray, fp32_predictions: np.ndarray, held_out: np.ndarray
) -> dict[str, Any]:
    """A model's predictions against the labels and against the FP32 model's, with their statistics."""
    hits = predictions == labels
    fp32_correct = int((fp32_predictions == labels).sum())
    correct = int(hits.sum())
    low, high = wilson_interval(correct, len(labels))
    b, c, p = mcnemar_exact(fp32_predictions == labels, hits)
    return {
        "correct": correct,
        "total": len(labels),
        "accuracy": correct / len(labels),
        "delta_points": (correct - fp32_correct) * 100 / len(labels),
        "wilson_low": low,
        "wilson_high": high,
        "mcnemar_fp32_only": b,
        "mcnemar_cell_only": c,
        "mcnemar_p": p,
        "heldout_accuracy": float(hits[held_out].mean()) if held_out.any() else float("nan"),  # null in json
        "agreement_fp32": float((predictions == fp32_predictions).mean()),
        "per_class_accuracy": [float(hits[labels == k].mean()) for k in np.unique(labels)],
        "predictions_sha256": hashlib.sha256(class_ids(predictions).tobytes()).hexdigest(),
    }
