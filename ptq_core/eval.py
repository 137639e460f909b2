"""One ``evaluate`` for every model kind: accuracy, per-class accuracy and per-image predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed, Outcome, non_finite_reason, reason_of
from ptq_core.runtimes import as_predictor

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


def score(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> EvalResult:
    hits = predictions == labels
    per_class = tuple(
        float(hits[labels == c].mean()) if (labels == c).any() else float("nan") for c in range(num_classes)
    )
    return EvalResult(int(hits.sum()), len(labels), per_class, predictions)


def predict_scores(
    model: Any, images: np.ndarray, spec: Any = None, runtime: str | None = None, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """(N, classes) scores of any model kind (a file on ``runtime``, a module, a program), in batches.

    Raises :class:`EvaluationFailed` when the runtime cannot load the model, raises on a batch, or answers
    non-finite scores: a result of that evaluation, not a fault of the input."""
    predict = as_predictor(model, spec, runtime)
    out = []
    for i in range(0, len(images), batch_size):
        try:
            out.append(predict(images[i : i + batch_size]))
        except PTQError:
            raise
        except Exception as exc:
            raise EvaluationFailed(
                Outcome.FAILED_WHILE_SCORING,
                f"on images {i}-{i + len(images[i : i + batch_size]) - 1}: {reason_of(exc)}",
            ) from exc
    scores = np.concatenate(out)
    bad = non_finite_reason(scores)
    if bad:
        raise EvaluationFailed(Outcome.FAILED_WHILE_SCORING, bad)
    return scores


def evaluate(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    spec: Any = None,
    runtime: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> EvalResult:
    """Score ``model`` (a model file, an ExportedProgram or an nn.Module) on the images."""
    from ptq_core.models import DEFAULT_MODEL, get_model

    spec = spec if spec is not None else get_model(DEFAULT_MODEL)
    labels = np.asarray(labels)
    if len(images) != len(labels) or len(labels) == 0:
        raise PTQError(
            f"evaluate needs as many labels as images (and at least one), got {len(images)} images "
            f"and {len(labels)} labels"
        )
    predictions = predict_scores(model, images, spec, runtime, batch_size).argmax(axis=1)
    return score(predictions, labels, spec.num_classes)
