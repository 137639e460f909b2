"""NNCF's ``quantize_with_accuracy_control`` on the search's calibration and validation images and max drop,
validated beside the candidates for comparison: never a candidate, as it would be chosen by the validation
images it was tuned on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core import cache, sources
from ptq_core.models import get_model
from ptq_core.runtimes import runtimes_for
from ptq_core.tune.candidates import TUNE_DIR
from ptq_core.tune.protocol import Protocol, digest
from ptq_core.tune.search import Row, Search
from ptq_core.workspace import ArtifactStore

VALIDATION_BATCH = 500


def nncf_accuracy_control(ws: ArtifactStore, model: str, protocol: Protocol, max_drop: float) -> tuple[Path, float]:
    """NNCF's artifact (ONNX Runtime validating, performance preset), built once, and the seconds it took."""
    fp32 = ws.fp32("onnx", model)
    calib = ws.calibration(protocol.base, model)
    val = protocol.validation
    path = ws.models_dir / TUNE_DIR / f"{model}-nncf-accuracy-control-{max_drop:g}-{digest(val)[:12]}.onnx"
    key = {
        "fp32_sha256": sources.file_digest(fp32),
        "calibration_sha256": calib.sha256,
        "validation_sha256": digest(val),
        "pool_sha256": ws.data_sha256(protocol.split),
        "max_drop_points": max_drop,
        "code": cache.code_digest(("tune/accuracy_control",)),
        "versions": cache.library_versions(("nncf", "onnxruntime", "onnx")),
    }
    seconds = {"build": 0.0}

    def build(tmp: Path) -> None:
        seconds["build"] = _quantize(fp32, calib.images, protocol, get_model(model).input_dtype, max_drop, tmp)

    path = cache.build_once(path, key, build)
    recorded = path.with_name(path.name + ".seconds")  # how long NNCF took when it was built
    if seconds["build"]:
        cache.write_atomic(recorded, f"{seconds['build']:.1f}")
    return path, float(recorded.read_text()) if recorded.exists() else float("nan")


def _quantize(fp32: Path, calibration: np.ndarray, protocol: Protocol, dtype: str, max_drop: float, out: Path) -> float:
    """Quantize into ``out``; the seconds ``quantize_with_accuracy_control`` took."""
    import contextlib
    import io
    import logging

    import nncf
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(fp32))
    name = proto.graph.input[0].name
    images = np.ascontiguousarray(protocol.images, dtype=dtype)
    step = VALIDATION_BATCH
    items = [({name: images[i : i + step]}, protocol.labels[i : i + step]) for i in range(0, len(images), step)]

    def validate(candidate: Any, data: Any) -> float:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(candidate.SerializeToString(), so, providers=["CPUExecutionProvider"])
        hits = sum(int((session.run(None, feed)[0].argmax(1) == y).sum()) for feed, y in data)
        return hits / len(images)

    batches = [{name: b} for b in np.array_split(calibration.astype(dtype), max(1, len(calibration) // 50))]
    nncf.set_log_level(logging.ERROR)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize_with_accuracy_control(
            proto, nncf.Dataset(batches), nncf.Dataset(items, lambda item: item), validate,
            max_drop=max_drop / 100, drop_type=nncf.DropType.ABSOLUTE,
            preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(batches),
        )  # fmt: skip
    seconds = time.perf_counter() - start
    onnx.save(quantized, str(out))
    return seconds


def compare(search: Search) -> list[Row]:
    """NNCF's artifact validated on every checked ONNX runtime, as the candidates are (failures recorded)."""
    path, seconds = nncf_accuracy_control(search.ws, search.model, search.protocol, search.max_drop)
    cell, rows = f"{search.model}-nncf-accuracy-control", []
    fp32 = search.fp32_accuracy
    for rt in runtimes_for("onnx", True):
        name = f"nncf accuracy control on {rt.name}"
        pred = search.scored(name, cell, rt.name, path)
        if pred is not None:
            acc = search.accuracy(pred)
            drop = (fp32[rt.name] - acc) * 100
            rows.append(Row(name, cell, rt.name, str(path), path.stat().st_size, acc, drop, tune_seconds=seconds))
    search.say(
        f"NNCF accuracy control ({seconds:.0f} s): validation "
        + ", ".join(f"{r.runtime} {r.validation_accuracy:.2%}" for r in rows)
    )
    return rows
