"""A candidate's top-1 classes: on the validation images, cached like the test split's predictions, and on the
test split, once. Apart from the search, so that only an edit of how predictions are made rescores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptq_core import cache, sources
from ptq_core.machine import cpu_capability
from ptq_core.models import get_model
from ptq_core.runtimes import get_runtime
from ptq_core.tune.candidates import TUNE_DIR
from ptq_core.tune.protocol import SPEED_BATCH, Protocol, digest
from ptq_core.workspace import ArtifactStore


def predict(path: Path, runtime: str, images: np.ndarray, model: str) -> np.ndarray:
    """Top-1 classes of ``path`` on ``runtime``: as it is scored, or (a runtime that only deploys) as it is
    timed, 1 thread, batches of SPEED_BATCH (Inductor: one shape)."""
    from ptq_core.eval import predict_scores

    if not get_runtime(runtime).scored:
        from ptq_core.bench import Deployment, predictions

        d = Deployment(runtime, path.stem, path, get_model(model))
        return predictions(d, images, threads=1, batch=SPEED_BATCH)
    return predict_scores(path, images, get_model(model), runtime, batch_size=500).argmax(axis=1)


def validation_predictions(ws: ArtifactStore, path: Path, runtime: str, model: str, protocol: Protocol) -> np.ndarray:
    """Top-1 classes of the validation images, cached like test predictions (keyed by the indices' digest)."""
    indices, rt = protocol.validation, get_runtime(runtime)
    key = {
        "model_sha256": sources.file_digest(path),
        "runtime": runtime,
        "pool_sha256": ws.data_sha256(protocol.split),
        "indices_sha256": digest(indices),
        # a runtime that only deploys runs through bench (and Inductor's compile); the others through eval and runtimes
        "code": cache.code_digest(
            (
                "eval",
                "runtimes",
                "adapters",
                "models",
                "tune/predictions",
                *(() if rt.scored else ("bench", "inductor")),
            )
        ),
        "versions": cache.library_versions(rt.libraries),
        "cpu": cpu_capability(),  # the kernels a runtime picks: AMX and VNNI flip different images
    }

    def build_predictions(tmp: Path) -> None:
        classes = np.min_scalar_type(max(get_model(model).num_classes - 1, 0))  # uint8 would wrap past 256
        with open(tmp, "wb") as f:
            np.save(f, predict(path, runtime, protocol.images, model).astype(classes))

    out = ws.models_dir / TUNE_DIR / "predictions" / f"{path.name}.{runtime}.{digest(indices)[:12]}.npy"
    return np.load(cache.build_once(out, key, build_predictions)).astype(np.int64)
