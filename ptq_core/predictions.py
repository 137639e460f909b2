"""Per-image predictions on the test split, cached like artifacts: once across workers and runs.

The key is the model file's digest, the test data's digest and the library versions, so a rebuilt
model or an upgraded runtime is evaluated again and nothing else is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptq_core import cache, sources
from ptq_core.cifar10 import TEST_DATA_SHA256
from ptq_core.eval import EvalResult, predict_classes, score
from ptq_core.workspace import Workspace

PREDICTIONS_DIR = "predictions"


def predictions_on_test(ws: Workspace, model: Path) -> np.ndarray:
    test = ws.split("test")
    key = {
        "model_sha256": sources.file_digest(model),
        "data_sha256": TEST_DATA_SHA256,
        "versions": cache.library_versions(),
        "model": model.name,
    }

    def build(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, predict_classes(model, test.images).astype(np.uint8))

    path = cache.build_once(ws.models_dir / PREDICTIONS_DIR / f"{model.name}.npy", key, build)
    return np.load(path).astype(np.int64)


def result_on_test(ws: Workspace, model: Path) -> EvalResult:
    return score(predictions_on_test(ws, model), ws.split("test").labels)
