"""Per-image predictions on the test split, and the shapes and row sums the same load answered (what the output
check reads), cached like artifacts: once across workers and runs.

The key is the model file's digest, the runtime, the test data's digest, the evaluation code, the
versions of the runtime's libraries and the CPU capability that picks its kernels: a rebuilt model,
changed preprocessing, an upgraded runtime or another CPU is evaluated again, and nothing else is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ptq_core import cache, sources
from ptq_core.eval import Answers, EvalResult, answer, score
from ptq_core.formats import format_of
from ptq_core.machine import cpu_capability
from ptq_core.models import DEFAULT_MODEL, get_model
from ptq_core.runtimes import get_runtime, runtimes_for
from ptq_core.workspace import ArtifactStore

PREDICTIONS_DIR = "predictions"
EVAL_MODULES = ("eval", "runtimes", "adapters", "models", "predictions")


def answers_on_test(
    ws: ArtifactStore, artifact: Path, runtime: str | None = None, model: str = DEFAULT_MODEL
) -> Answers:
    spec = get_model(model)
    rt = get_runtime(runtime) if runtime else runtimes_for(format_of(artifact).name)[0]
    test = ws.split("test")
    key = {
        "model_sha256": sources.file_digest(artifact),
        "runtime": rt.name,
        "data_sha256": ws.data_sha256("test"),
        "code": cache.code_digest(EVAL_MODULES),
        "versions": cache.library_versions(rt.libraries),
        "cpu": cpu_capability(),  # the int8 and bf16 kernels a runtime picks: AMX and VNNI flip different images
        "model": artifact.name,
    }

    def build(tmp: Path) -> None:
        answers = answer(artifact, test.images, spec, rt.name)
        # the smallest unsigned type that holds every class id (uint8 up to 256 classes, uint16 up to 65,536)
        classes = np.min_scalar_type(int(answers.predictions.max(initial=0)))
        with open(tmp, "wb") as f:
            np.savez(
                f,
                predictions=answers.predictions.astype(classes),
                shapes=np.array(json.dumps(sorted(answers.shapes.items()))),
                row_sum_error=np.array(answers.row_sum_error),
            )

    path = cache.build_once(ws.models_dir / PREDICTIONS_DIR / f"{artifact.name}.{rt.name}.npz", key, build)
    with np.load(path) as saved:
        shapes = {batch: tuple(shape) for batch, shape in json.loads(str(saved["shapes"]))}
        return Answers(saved["predictions"].astype(np.int64), shapes, float(saved["row_sum_error"]))


def predictions_on_test(
    ws: ArtifactStore, artifact: Path, runtime: str | None = None, model: str = DEFAULT_MODEL
) -> np.ndarray:
    return answers_on_test(ws, artifact, runtime, model).predictions


def result_on_test(
    ws: ArtifactStore, artifact: Path, runtime: str | None = None, model: str = DEFAULT_MODEL
) -> EvalResult:
    """The artifact's accuracy on the store's test images, with what the load that scored them answered."""
    spec = get_model(model)
    return score(answers_on_test(ws, artifact, runtime, model), ws.split("test").labels, spec.num_classes)
