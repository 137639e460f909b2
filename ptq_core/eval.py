"""One ``evaluate`` for every model kind: accuracy, per-class accuracy and per-image predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ptq_core.cifar10 import NUM_CLASSES
from ptq_core.errors import PTQError
from ptq_core.runtime import as_predictor, check_images

BATCH_SIZE = 64  # measured: eager PT2E models run 2x faster at 64 than at 500 (cache-sized activations)


@dataclass(frozen=True)
class EvalResult:
    correct: int
    total: int
    per_class_accuracy: tuple[float, ...]
    predictions: np.ndarray  # top-1 class per image, in the order given

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "per_class_accuracy": list(self.per_class_accuracy),
        }


def score(predictions: np.ndarray, labels: np.ndarray) -> EvalResult:
    hits = predictions == labels
    per_class = tuple(
        float(hits[labels == c].mean()) if (labels == c).any() else float("nan") for c in range(NUM_CLASSES)
    )
    return EvalResult(int(hits.sum()), len(labels), per_class, predictions)


def predict_probabilities(model: Any, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N, 10) class probabilities of any model kind, computed in batches."""
    predict = as_predictor(model)
    check_images(images[:1])
    out = [predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 10), dtype=np.float32)


def predict_classes(model: Any, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    return predict_probabilities(model, images, batch_size).argmax(axis=1)


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = BATCH_SIZE) -> EvalResult:
    """Score ``model`` (ONNX/.pt path, InferenceSession, ExportedProgram or nn.Module) on the images."""
    labels = np.asarray(labels)
    if len(images) != len(labels) or len(labels) == 0:
        raise PTQError(
            f"evaluate needs as many labels as images (and at least one), got {len(images)} images "
            f"and {len(labels)} labels"
        )
    return score(predict_classes(model, images, batch_size), labels)
