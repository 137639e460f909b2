"""``ptq tune``: the 8-bit model to ship, chosen on validation images by accuracy and speed.

Protocol: the cells calibrate on their 200 stratified train images; a stratified validation set of other
train images decides everything (which candidates hold ``max_drop``, which layers stay in float); the test
split is scored once, at the end, for the chosen model and its FP32 twin only. The search space is every
cell of every backend, each calibrated on 200 and on 1,000 train images (``--calibration-samples``; entropy
and distribution cells on 200 only), on every runtime that serves it as ``ptq bench`` deploys it
(``runtimes.serving``: an ONNX cell on ONNX Runtime and OpenVINO, a PT2E cell compiled by Inductor); ONNX
Runtime's percentile and entropy cells with other
calibrator settings (``CALIBRATOR_VARIANTS``); and mixed precision in ONNX Runtime (``nodes_to_exclude``) and
PT2E (a per-module quantizer config): the fast cell of each (``MIXED_CELLS``) with its most sensitive conv/linear
layers left in float (ranked by reverting one layer at a time, as NNCF's accuracy control does), added until
the drop holds. Among the candidates within ``max_drop`` of FP32 on validation, the fastest at batch 256
(measured in one interleaved run, 1 thread, on the runtime that will serve it) or the smallest wins.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core import cache, sources
from ptq_core.calibration import CalibrationConfig, stratified_indices
from ptq_core.checks import known_failure
from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed, Outcome, reason_of
from ptq_core.machine import cpu_capability
from ptq_core.matrix import CELLS, Cell
from ptq_core.models import DEFAULT_MODEL, get_model
from ptq_core.runtimes import get_runtime, runtimes_for, serving

VALIDATION_SIZE, VALIDATION_SEED = 5000, 1
TUNE_DIR = "tune"
SPEED_BATCH, SPEED_ROUNDS, HEAD_TO_HEAD_ROUNDS = 256, 5, 31
# Speeds within 5 % of the fastest count as a tie, which the candidate closest to FP32 wins: two searches timed
# the same OpenVINO candidates 3.29-3.32x apart by ~1 % from run to run, and runtimes differ by far more
# (OpenVINO ~3.3x, ONNX Runtime ~2.0x).
SPEED_TIE = 0.05
# Mixed precision starts from the fast cell of each backend with a per-layer float option; the layers are ranked
# on the runtime named here (eager torch for PT2E: no compile per ranking build).
MIXED_CELLS = {Cell("onnxruntime", "u8s8"): "onnxruntime", Cell("pytorch", "uint8"): "torch"}
CALIBRATION_SAMPLES = (200, 1000)
# Histogram calibrators whose ranges cost far more on more images (entropy) or are known-bad (distribution)
# are searched at the default 200 only.
ONE_SIZE_CALIBRATORS = ("entropy", "distribution")
# ONNX Runtime calibrator settings searched beside the cells' own (backends/onnxruntime.CALIBRATOR_OPTIONS:
# percentile 99.999, entropy 2048 bins into 128): clipping more outliers, and a coarser entropy histogram.
CALIBRATOR_VARIANTS: dict[str, tuple[dict[str, object], ...]] = {
    "percentile": ({"percentile": 99.99}, {"percentile": 99.9}),
    "entropy": ({"num_bins": 1024},),
}


def digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def validation_indices(
    labels: np.ndarray, calibration: np.ndarray, size: int | None, seed: int, classes: np.ndarray | None = None
) -> np.ndarray:
    """``size`` (default: up to ``VALIDATION_SIZE``) stratified images of the pool that are not calibration
    images: sorted indices into the pool (the train split, or a user's calibration file)."""
    others = np.setdiff1d(np.arange(len(labels)), calibration)
    n_classes = 10 if classes is None else len(classes)
    if size is None:  # as many as stay stratified: every class as often as the rarest
        counts = [int((labels[others] == c).sum()) for c in (np.arange(10) if classes is None else classes)]
        size = min(VALIDATION_SIZE, n_classes * min(counts))
    if not n_classes <= size <= len(others):
        raise PTQError(
            f"--validation {size}: give between {n_classes} (one per class) and {len(others)} (the images that do "
            "not calibrate) validation images"
        )
    return np.sort(others[stratified_indices(labels[others], size, seed, classes)])


@dataclass(frozen=True)
class Pool:
    """Where a tune's images come from: ``split`` calibrates and validates, ``scored`` is scored once."""

    split: str  # "train" for a registered model, "calibration" for a user's (its labelled --calibration file)
    scored: str  # "test", or a user's --data
    configs: tuple[CalibrationConfig, ...]
    classes: np.ndarray | None  # the classes to stratify over (None: CIFAR-10's 10)


def pool_of(ws: Any, calibration_samples: tuple[int, ...]) -> Pool:
    from ptq_core.user import UserStore

    if isinstance(ws, UserStore):
        if ws.pool is None:
            raise PTQError(
                "ptq tune --onnx needs --calibration CALIB.npz with `images` and `labels`: 200 of them calibrate, "
                "others validate, and --data is scored once at the end"
            )
        return Pool("calibration", "data", (ws.calib.config,), np.unique(ws.pool.labels))
    configs = tuple(CalibrationConfig(num_samples=n) for n in sorted(set(calibration_samples)))
    return Pool("train", "test", configs, None)


@dataclass(frozen=True)
class Candidate:
    cell: Cell
    runtime: str
    path: Path
    float_layers: tuple[str, ...] = ()  # ONNX node names left in float (mixed precision)
    calibration: CalibrationConfig = CalibrationConfig()
    options: tuple[tuple[str, object], ...] = ()  # calibrator settings other than the cell's own

    @property
    def name(self) -> str:
        mixed = f"+{len(self.float_layers)}fp32" if self.float_layers else ""
        n = self.calibration.num_samples
        samples = "" if n == CalibrationConfig().num_samples else f"@{n}"
        options = "".join(f"[{k} {v}]" for k, v in self.options)
        return f"{self.cell.id}{samples}{options}{mixed} on {self.runtime}"


def _predict(path: Path, runtime: str, images: np.ndarray, model: str) -> np.ndarray:
    from ptq_core.eval import predict_scores

    if not get_runtime(runtime).scored:  # as it is timed: 1 thread, batches of SPEED_BATCH (Inductor: one shape)
        from ptq_core.bench import Deployment, predictions

        d = Deployment(runtime, path.stem, path, get_model(model))
        return predictions(d, images, threads=1, batch=SPEED_BATCH)
    return predict_scores(path, images, get_model(model), runtime, batch_size=500).argmax(axis=1)


# Measured with torch 2.13: Inductor's x86 int8 kernels take uint8 activations. An int8 per-channel PT2E cell
# fails to compile (quantized::packed_weights_conv2drelu: "Input tensor should have uint8"), an int8 per-tensor
# one runs unfused, 2.3x slower than the uint8 cell.
UNSERVED = "PT2E cells with int8 activations: Inductor's x86 int8 kernels take uint8 activations"


def candidate_runtimes(cell: Cell) -> tuple[str, ...]:
    """The runtimes a cell's artifact is a candidate on: those serving it at the timed batch and thread (a PT2E
    cell with int8 activations: none, ``UNSERVED``)."""
    return tuple(rt.name for rt in serving(cell) if rt.applies(SPEED_BATCH, 1))


def fp32_for(ws: Any, runtime: str, model: str) -> Path:
    """The FP32 model a candidate on ``runtime`` is compared with: the same format on the same runtime."""
    return ws.fp32(get_runtime(runtime).format, model)


def validation_predictions(
    ws: Any, path: Path, runtime: str, model: str, indices: np.ndarray, pool: str = "train"
) -> np.ndarray:
    """Top-1 classes of the validation images, cached like test predictions (keyed by the indices' digest)."""
    key = {
        "model_sha256": sources.file_digest(path),
        "runtime": runtime,
        "pool_sha256": ws.data_sha256(pool),
        "indices_sha256": digest(indices),
        # a runtime that only deploys runs through bench (and speed's compile); the others through eval and runtimes
        "code": cache.code_digest(
            ("eval", "runtimes", "models", "tune", *(() if get_runtime(runtime).scored else ("bench", "speed")))
        ),
        "versions": cache.library_versions(get_runtime(runtime).libraries),
        "cpu": cpu_capability(),  # the kernels a runtime picks: AMX and VNNI flip different images
    }
    images = ws.split(pool).images[indices]

    def build(tmp: Path) -> None:
        classes = np.min_scalar_type(max(get_model(model).num_classes - 1, 0))  # uint8 would wrap past 256
        with open(tmp, "wb") as f:
            np.save(f, _predict(path, runtime, images, model).astype(classes))

    out = ws.models_dir / TUNE_DIR / "predictions" / f"{path.name}.{runtime}.{digest(indices)[:12]}.npy"
    return np.load(cache.build_once(out, key, build)).astype(np.int64)


def mixed_precision(ws: Any, cell: Cell, float_layers: tuple[str, ...]) -> Path:
    """The cell with ``float_layers`` left in float: ONNX node names for ONNX Runtime, module names for PT2E."""
    stem = f"{cell.id}-fp32-{hashlib.sha256(chr(0).join(float_layers).encode()).hexdigest()[:12]}"
    if cell.backend == "pytorch":
        return _pt2e_mixed_precision(ws, cell, float_layers, stem)
    ws.quantized(cell)  # its calibrator's shared ranges
    ranges = ws.shared_path(cell, f"ranges-{cell.calibrator}.json", ws.calibration().config)
    return _from_ranges(ws, cell, ranges, stem, float_layers)


def _pt2e_mixed_precision(ws: Any, cell: Cell, float_layers: tuple[str, ...], stem: str) -> Path:
    from ptq_core.backends import pytorch

    inputs, common = ws.build_inputs(cell)
    key = {
        **common,
        "cell": cell.id,
        "float_layers": list(float_layers),
        "code": cache.code_digest(("tune", "backends/pytorch", "backends/__init__", "calibration")),
    }
    return cache.build_once(
        ws.models_dir / TUNE_DIR / f"{stem}.pt2",
        key,
        lambda tmp: pytorch.quantize(inputs, cell, tmp, float_layers),
    )


def layers_of(ws: Any, cell: Cell) -> tuple[str, ...]:
    """The conv/linear layers mixed precision may leave in float, by the name the cell's backend takes."""
    from ptq_core.backends import pytorch

    if cell.backend == "pytorch":
        return pytorch.weight_layers(ws.fp32_module(cell.model))
    return weight_layers(ws.fp32("onnx", cell.model))


def calibrator_variant(ws: Any, cell: Cell, options: dict[str, object]) -> Path:
    """The ONNX Runtime cell with its calibrator's settings changed by ``options``, built once."""
    from ptq_core.backends import onnxruntime as ort_backend
    from ptq_core.formats.onnx import input_name

    fp32 = ws.fp32("onnx", cell.model)
    calib = ws.calibration()
    settings = {**ort_backend.CALIBRATOR_OPTIONS[cell.calibrator], **options}
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    key = {
        "calibrator": cell.calibrator,
        "options": settings,
        "fp32_sha256": sources.file_digest(fp32),
        "calibration_sha256": calib.sha256,
        "code": cache.code_digest(("tune", "backends/onnxruntime")),
        "versions": cache.library_versions(("onnxruntime", "onnx")),
    }
    ranges = cache.build_once(
        ws.models_dir / TUNE_DIR / f"{cell.model}-ranges-{cell.calibrator}-{tag}{calib.config.suffix}.json",
        key,
        lambda tmp: ort_backend.save_ranges(
            fp32, cell.calibrator, np.ascontiguousarray(calib.images), input_name(fp32), tmp, settings
        ),
    )
    return _from_ranges(ws, cell, ranges, f"{cell.id}-{tag}{calib.config.suffix}")


def _from_ranges(ws: Any, cell: Cell, ranges: Path, stem: str, float_layers: tuple[str, ...] = ()) -> Path:
    """quantize_static of the ONNX Runtime cell from a calibration cache, built once into the tune cache."""
    from ptq_core.backends import onnxruntime as ort_backend

    fp32 = ws.fp32("onnx", cell.model)
    key = {
        "cell": cell.id,
        "float_layers": list(float_layers),
        "fp32_sha256": sources.file_digest(fp32),
        "ranges_sha256": sources.file_digest(ranges),
        "code": cache.code_digest(("tune", "backends/onnxruntime")),
        "versions": cache.library_versions(("onnxruntime", "onnx")),
    }
    return cache.build_once(
        ws.models_dir / TUNE_DIR / f"{stem}.onnx",
        key,
        lambda tmp: ort_backend.quantize_with_ranges(fp32, ranges, cell, tmp, nodes_to_exclude=float_layers),
    )


def nncf_accuracy_control(
    ws: Any, model: str, val: np.ndarray, max_drop: float, pool: str = "train"
) -> tuple[Path, float]:
    """NNCF's ``quantize_with_accuracy_control`` on the same calibration and validation images and max drop
    (ONNX Runtime validating, performance preset): its artifact, built once, and the seconds it took."""
    import contextlib
    import io
    import logging

    fp32 = ws.fp32("onnx", model)
    calib = ws.calibration(CalibrationConfig())
    source = ws.split(pool)
    dtype = get_model(model).input_dtype
    path = ws.models_dir / TUNE_DIR / f"{model}-nncf-accuracy-control-{max_drop:g}-{digest(val)[:12]}.onnx"
    key = {
        "fp32_sha256": sources.file_digest(fp32),
        "calibration_sha256": calib.sha256,
        "validation_sha256": digest(val),
        "pool_sha256": ws.data_sha256(pool),
        "max_drop_points": max_drop,
        "code": cache.code_digest(("tune",)),
        "versions": cache.library_versions(("nncf", "onnxruntime", "onnx")),
    }
    seconds = {"build": 0.0}

    def build(tmp: Path) -> None:
        import nncf
        import onnx
        import onnxruntime as ort

        proto = onnx.load(str(fp32))
        name = proto.graph.input[0].name
        images = np.ascontiguousarray(source.images[val], dtype=dtype)
        items = [({name: images[i : i + 500]}, source.labels[val][i : i + 500]) for i in range(0, len(val), 500)]

        def validate(candidate: Any, data: Any) -> float:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            session = ort.InferenceSession(candidate.SerializeToString(), so, providers=["CPUExecutionProvider"])
            hits = sum(int((session.run(None, feed)[0].argmax(1) == y).sum()) for feed, y in data)
            return hits / len(val)

        batches = [{name: b} for b in np.array_split(calib.images.astype(dtype), max(1, len(calib.images) // 50))]
        nncf.set_log_level(logging.ERROR)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize_with_accuracy_control(
                proto, nncf.Dataset(batches), nncf.Dataset(items, lambda item: item), validate,
                max_drop=max_drop / 100, drop_type=nncf.DropType.ABSOLUTE,
                preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(batches),
            )  # fmt: skip
        seconds["build"] = time.perf_counter() - start
        onnx.save(quantized, str(tmp))

    path = cache.build_once(path, key, build)
    recorded = path.with_name(path.name + ".seconds")  # how long NNCF took when it was built
    if seconds["build"]:
        cache._write_atomic(recorded, f"{seconds['build']:.1f}")
    return path, float(recorded.read_text()) if recorded.exists() else float("nan")


# The float deployments 8-bit is timed against: ORT FP32 (the reference) and OpenVINO at its default precision,
# bf16 where the CPU has it (AVX-512 BF16, AMX-BF16): no calibration, and on some CPUs nearly as fast as 8-bit
FLOAT_RUNTIMES = ("onnxruntime", "openvino_default")


def float_deployments(
    ws: Any, fp32: Path, model: str, val: np.ndarray, labels: np.ndarray, reference: float, max_drop: float, pool: str
) -> dict[str, str]:
    """``{name: runtime}`` of the float deployments that load and hold ``max_drop`` of ORT FP32 on validation."""
    out = {}
    for rt in FLOAT_RUNTIMES:
        try:
            pred = validation_predictions(ws, fp32, rt, model, val, pool)
        except EvaluationFailed:
            continue
        if rt == "onnxruntime" or (reference - float((pred == labels).mean())) * 100 <= max_drop:
            out[f"fp32 on {rt}"] = rt
    return out


def _checked_as(runtime: str) -> str:
    """The runtime whose known failures a candidate on ``runtime`` has: its own, or (one that only deploys) its
    format's first scored runtime (PT2E on Inductor: eager torch's)."""
    rt = get_runtime(runtime)
    return rt.name if rt.scored else runtimes_for(rt.format)[0].name


def _cells(ws: Any, model: str) -> tuple[Cell, ...]:
    from ptq_core.run import user_cells
    from ptq_core.user import UserStore

    return user_cells(ws) if isinstance(ws, UserStore) else tuple(c for c in CELLS if c.model == model)


def weight_layers(fp32_onnx: Path) -> tuple[str, ...]:
    import onnx

    from ptq_core.formats.onnx import WEIGHT_OPS

    return tuple(n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type in WEIGHT_OPS)


def choose(rows: list[dict[str, Any]], max_drop: float, objective: str = "speed") -> dict[str, Any] | None:
    """The candidate to ship: within ``max_drop`` points of FP32 on validation, then the fastest (speeds within
    ``SPEED_TIE`` of it tie) or the smallest; a tie goes to the candidate closest to FP32 on validation.

    Closest, not most accurate: the goal is a model indistinguishable from FP32, and a validation gain over FP32
    is noise or a fit to images the model was trained on. ResNet8's bias-corrected NNCF cells gain 0.24 points
    on validation while changing 184-195 of its 5,000 predictions (the other cells 78-97).
    """
    ok = [
        r
        for r in rows
        if r["validation_drop_points"] <= max_drop
        and r.get(objective_key(objective)) is not None
        and not r.get("deployment_failed")
    ]
    if not ok:
        return None

    def distance(r: dict[str, Any]) -> tuple[float, int]:
        return abs(r["validation_drop_points"]), r.get("validation_changed", 0)

    if objective == "size":
        return min(ok, key=lambda r: (r["file_bytes"], *distance(r)))
    fastest = max(r["vs_ort_fp32"] for r in ok)
    as_fast = [r for r in ok if r["vs_ort_fp32"] >= fastest * (1 - SPEED_TIE)]
    return min(as_fast, key=lambda r: (*distance(r), -r["vs_ort_fp32"]))


def objective_key(objective: str) -> str:
    return {"speed": "vs_ort_fp32", "size": "file_bytes"}[objective]


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates no other beats on both validation accuracy and speed."""
    timed = [r for r in rows if r.get("vs_ort_fp32") is not None]
    return [
        r
        for r in timed
        if not any(
            o["validation_accuracy"] >= r["validation_accuracy"]
            and o["vs_ort_fp32"] >= r["vs_ort_fp32"]
            and (o["validation_accuracy"], o["vs_ort_fp32"]) != (r["validation_accuracy"], r["vs_ort_fp32"])
            for o in timed
        )
    ]


def tune(
    ws: Any,
    max_drop: float,
    model: str = DEFAULT_MODEL,
    objective: str = "speed",
    budget_minutes: float | None = None,
    validation_size: int | None = None,
    patterns: tuple[str, ...] = (),
    say: Callable[[str], None] = print,
    calibration_samples: tuple[int, ...] = CALIBRATION_SAMPLES,
) -> dict[str, Any]:
    """Search, choose and score once on the test split; the json-ready trace of all of it."""
    import fnmatch

    from ptq_core.bench import Deployment, bound_run
    from ptq_core.options import max_drop_points
    from ptq_core.speed import PairedTimer
    from ptq_core.stats import mcnemar_exact, wilson_interval

    if budget_minutes is not None and budget_minutes <= 0:
        raise PTQError(f"--budget {budget_minutes:g}: give the minutes the search may take (> 0)")
    if objective not in ("speed", "size"):
        raise PTQError(f"--objective {objective!r}: choose speed or size")
    max_drop = max_drop_points(max_drop)  # the one validator of --max-drop, --ptq-max-drop and max_drop
    from ptq_core.user import UserStore

    for n in calibration_samples:  # of a user's labelled --calibration file (pool_of refuses one without labels)
        if isinstance(ws, UserStore) and ws.pool is not None and n < (classes := len(np.unique(ws.pool.labels))):
            raise PTQError(
                f"--calibration-samples {n}: give at least {classes}, one image of each of the {classes} classes of "
                f"--calibration {ws.calibration_file} (it holds {len(ws.pool)} images; more takes them all)"
            )
        if not isinstance(ws, UserStore) and not 10 <= n <= 10_000:  # CIFAR-10's train split
            raise PTQError(f"--calibration-samples {n}: give between 10 (one image per class) and 10000 train images")
    start = time.perf_counter()
    deadline = start + budget_minutes * 60 if budget_minutes else None
    pool = pool_of(ws, calibration_samples)
    source = ws.split(pool.split)
    configs = pool.configs
    calibrated = np.unique(np.concatenate([ws.calibration(c).indices for c in configs]))
    val = validation_indices(source.labels, calibrated, validation_size, VALIDATION_SEED, pool.classes)
    val_labels = source.labels[val]
    fp32 = ws.fp32("onnx", model)
    cells = [
        c
        for c in _cells(ws, model)
        if not patterns or any(fnmatch.fnmatch(c.id.removeprefix(f"{model}-"), p) for p in patterns)
    ]
    if not any(candidate_runtimes(c) for c in cells):
        names = ", ".join(c.id.removeprefix(f"{model}-") for c in _cells(ws, model)[:2])
        raise PTQError(
            f"--cells {' '.join(patterns)} matches no searched cell of {model}: cells are named like {names}"
        )
    served = {rt for c in cells for rt in candidate_runtimes(c)} | {rt.name for rt in runtimes_for("onnx", True)}
    fp32_val, unserved = {}, {}
    for name in sorted(served):
        try:
            fp32_val[name] = validation_predictions(ws, fp32_for(ws, name, model), name, model, val, pool.split)
        except EvaluationFailed as exc:  # no candidate on this runtime can be compared: each is a failed one
            unserved[name] = f"FP32 {exc}"
    fp32_acc = {rt: float((p == val_labels).mean()) for rt, p in fp32_val.items()}
    say(f"validation: {len(val)} {pool.split} images; FP32 " + ", ".join(f"{k} {v:.2%}" for k, v in fp32_acc.items()))

    if any(not candidate_runtimes(c) for c in cells):
        say(f"not searched: {UNSERVED}")
    candidates = [
        Candidate(c, rt, ws.quantized(c, config), calibration=config)
        for c in cells
        for config in configs
        if config.is_default or c.calibrator not in ONE_SIZE_CALIBRATORS
        for rt in candidate_runtimes(c)
        # measured far outside any drop (a runtime that only deploys: by the checks on its format's first runtime)
        if not known_failure(c, "check_accuracy_vs_fp32", _checked_as(rt))
    ]
    if not candidates:
        raise PTQError(
            f"--cells {' '.join(patterns)}: every cell it matches is a known accuracy failure; choose others"
        )
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []  # candidates a runtime could not load or score: results, not candidates
    stopped = None

    def evaluate(cand: Candidate) -> dict[str, Any] | None:
        try:
            if cand.runtime in unserved:
                raise EvaluationFailed(Outcome.FAILED_TO_LOAD, unserved[cand.runtime])
            pred = validation_predictions(ws, cand.path, cand.runtime, model, val, pool.split)
        except EvaluationFailed as exc:
            failed.append({"candidate": cand.name, "cell": cand.cell.id, "runtime": cand.runtime,
                           "outcome": str(exc.outcome), "reason": exc.reason})  # fmt: skip
            say(f"[-] {cand.name}: {exc}")
            return None
        acc = float((pred == val_labels).mean())
        row = {
            "candidate": cand.name,
            "cell": cand.cell.id,
            "runtime": cand.runtime,
            "float_layers": list(cand.float_layers),
            "calibration_images": cand.calibration.num_samples,
            "calibrator_options": dict(cand.options),
            "artifact": str(cand.path),
            "file_bytes": cand.path.stat().st_size,
            "validation_accuracy": acc,
            "validation_drop_points": (fp32_acc[cand.runtime] - acc) * 100,
            "validation_changed": int((pred != fp32_val[cand.runtime]).sum()),  # images whose class FP32's differs
        }
        rows.append(row)
        say(f"[{len(rows)}] {cand.name}: validation {acc:.2%} ({(acc - fp32_acc[cand.runtime]) * 100:+.2f} points)")
        return row

    variants = (
        Candidate(c, rt, calibrator_variant(ws, c, options), options=tuple(options.items()))
        for c in cells
        if c.backend == "onnxruntime"
        for options in CALIBRATOR_VARIANTS.get(c.calibrator, ())
        for rt in candidate_runtimes(c)
    )
    for cand in itertools.chain(candidates, variants):  # variants are built as the search reaches them
        if deadline and time.perf_counter() > deadline and rows:  # at least one candidate, whatever the budget
            stopped = "budget"
            break
        evaluate(cand)

    # mixed precision: revert one layer at a time, rank by the accuracy it gives back, revert the worst first
    for mixed_cell, ranking_runtime in MIXED_CELLS.items():
        base_cell = mixed_cell.replace(model=model)
        runtime = candidate_runtimes(base_cell)[0]
        base = next(
            (
                r
                for r in rows
                if (r["cell"], r["runtime"], r["calibration_images"], r["calibrator_options"])
                == (base_cell.id, runtime, ws.calibration().config.num_samples, {})
            ),
            None,
        )
        if base is None or base["validation_drop_points"] <= max_drop or stopped:
            continue
        base_ranked = validation_predictions(
            ws, Path(base["artifact"]), ranking_runtime, model, val, pool.split
        )  # the base on the ranking runtime
        base_hits = float((base_ranked == val_labels).mean())
        gains = {}
        for layer in layers_of(ws, base_cell):
            if deadline and time.perf_counter() > deadline:
                stopped = "budget"
                break
            mixed = mixed_precision(ws, base_cell, (layer,))
            pred = validation_predictions(ws, mixed, ranking_runtime, model, val, pool.split)
            gains[layer] = float((pred == val_labels).mean()) - base_hits
        ranked = sorted(gains, key=lambda k: -gains[k])
        say(
            f"{base_cell.backend} layer sensitivity (validation accuracy regained in float, on {ranking_runtime}): "
            + ", ".join(f"{k} {gains[k]:+.2%}" for k in ranked)
        )
        for k in range(1, len(ranked) + 1):
            if deadline and time.perf_counter() > deadline:
                stopped = "budget"
                break
            layers = tuple(ranked[:k])
            row = evaluate(Candidate(base_cell, runtime, mixed_precision(ws, base_cell, layers), layers))
            if row is None or row["validation_drop_points"] <= max_drop:
                break

    # NNCF's accuracy control on the same images and drop, for comparison (never a candidate: it would be
    # chosen by the same validation images it was tuned on)
    nncf_ac, nncf_seconds = nncf_accuracy_control(ws, model, val, max_drop, pool.split)
    nncf_rows: list[dict[str, Any]] = []
    for rt in runtimes_for("onnx", True):
        try:
            if rt.name in unserved:
                raise EvaluationFailed(Outcome.FAILED_TO_LOAD, unserved[rt.name])
            pred = validation_predictions(ws, nncf_ac, rt.name, model, val, pool.split)
        except EvaluationFailed as exc:
            failed.append({"candidate": f"nncf accuracy control on {rt.name}", "cell": f"{model}-nncf-accuracy-control",
                           "runtime": rt.name, "outcome": str(exc.outcome), "reason": exc.reason})  # fmt: skip
            continue
        acc = float((pred == val_labels).mean())
        nncf_rows.append(
            {
                "candidate": f"nncf accuracy control on {rt.name}",
                "cell": f"{model}-nncf-accuracy-control",
                "runtime": rt.name,
                "artifact": str(nncf_ac),
                "file_bytes": nncf_ac.stat().st_size,
                "validation_accuracy": acc,
                "validation_drop_points": (fp32_acc[rt.name] - acc) * 100,
                "tune_seconds": nncf_seconds,
            }
        )
    say(
        f"NNCF accuracy control ({nncf_seconds:.0f} s): validation "
        + ", ".join(f"{r['runtime']} {r['validation_accuracy']:.2%}" for r in nncf_rows)
    )

    # speed of every candidate within the drop (and the best of the rest), one interleaved run against ORT FP32
    timed = [r for r in rows if r["validation_drop_points"] <= max_drop] or sorted(
        rows, key=lambda r: r["validation_drop_points"]
    )[:3]
    timed += nncf_rows
    images, spec = source.images[val[:SPEED_BATCH]], get_model(model)
    floats = float_deployments(ws, fp32, model, val, val_labels, fp32_acc["onnxruntime"], max_drop, pool.split)
    fns = {name: bound_run(Deployment(rt, "fp32", fp32, spec), images, 1) for name, rt in floats.items()}
    for r in list(timed):
        try:
            d = Deployment(r["runtime"], r["cell"], Path(r["artifact"]), spec)
            fns[r["candidate"]] = bound_run(d, images, 1)
        except Exception as exc:  # the runtime cannot deploy it at the timed batch: a result, the rest go on
            timed.remove(r)
            failed.append({**{k: r[k] for k in ("candidate", "cell", "runtime")}, "outcome": "failed to load",
                           "reason": reason_of(exc.__cause__ or exc)})  # fmt: skip
            r["deployment_failed"] = failed[-1]["reason"]  # never chosen: it cannot be served
    timer = PairedTimer(fns)
    say(f"timing {len(timed)} candidates against ORT FP32, batch {SPEED_BATCH}, 1 thread, {SPEED_ROUNDS} rounds")
    for _ in range(SPEED_ROUNDS):
        timer.round()
    best_float = min(floats, key=timer.median_seconds)
    for r in timed:
        r["vs_ort_fp32"] = timer.speedup(r["candidate"], over="fp32 on onnxruntime")
        r["vs_best_float"] = timer.speedup(r["candidate"], over=best_float)
        r["images_per_s"] = SPEED_BATCH / timer.median_seconds(r["candidate"])

    chosen = choose(rows, max_drop, objective)
    result: dict[str, Any] = {
        "model": model,
        "max_drop_points": max_drop,
        "objective": objective,
        "protocol": {
            "calibration": [
                {"split": pool.split, "images": c.num_samples, "indices_sha256": digest(ws.calibration(c).indices)}
                for c in configs
            ],
            "validation": {
                "split": pool.split,
                "images": len(val),
                "seed": VALIDATION_SEED,
                "indices_sha256": digest(val),
            },
            "test": {"split": pool.scored, "images": len(ws.split("test")), "scored": "once: the chosen model, FP32"},
        },
        "fp32_validation_accuracy": fp32_acc,
        "candidates": rows,
        "pareto": [r["candidate"] for r in pareto(rows)],
        "failed_candidates": failed,
        "best_float": {
            "deployment": best_float,
            "vs_ort_fp32": timer.speedup(best_float, over="fp32 on onnxruntime"),
            "images_per_s": SPEED_BATCH / timer.median_seconds(best_float),
        },
        "stopped": stopped,
    }
    if not rows or not nncf_rows:
        raise EvaluationFailed(
            Outcome.FAILED_TO_LOAD, "no candidate could be scored: " + "; ".join(f["reason"] for f in failed[:3])
        )
    best = chosen or min(rows, key=lambda r: r["validation_drop_points"])
    test = ws.split("test")  # the first and only time the test labels are read
    best_fp32 = fp32_for(ws, best["runtime"], model)
    cand_pred = _predict(Path(best["artifact"]), best["runtime"], test.images, model)
    fp32_pred = _predict(best_fp32, best["runtime"], test.images, model)
    hits, fp32_hits = cand_pred == test.labels, fp32_pred == test.labels
    low, high = wilson_interval(int(hits.sum()), len(hits))
    only_fp32, only_cand, p = mcnemar_exact(fp32_hits, hits)
    result["chosen" if chosen else "best_found"] = {
        **best,
        "test_accuracy": float(hits.mean()),
        "test_fp32_accuracy": float(fp32_hits.mean()),
        "test_wilson_95": [low, high],
        "test_mcnemar_fp32_only": only_fp32,
        "test_mcnemar_candidate_only": only_cand,
        "test_mcnemar_p": p,
        "size_ratio": best_fp32.stat().st_size / best["file_bytes"],
    }
    nncf_best = max(nncf_rows, key=lambda r: r["vs_ort_fp32"])  # served where it runs fastest
    if best.get("vs_ort_fp32") is not None:
        # one interleaved run of SPEED_ROUNDS leaves +-2.5 % between ResNet8 candidates of the same graph: the
        # answer to "as fast as NNCF's?" gets rounds of its own
        duel = PairedTimer({r["candidate"]: fns[r["candidate"]] for r in (best, nncf_best)})
        for _ in range(HEAD_TO_HEAD_ROUNDS):
            duel.round()
        pairs = list(zip(duel.seconds[best["candidate"]], duel.seconds[nncf_best["candidate"]], strict=True))
        result["head_to_head"] = {
            "rounds": HEAD_TO_HEAD_ROUNDS,
            "vs_nncf_accuracy_control": duel.speedup(best["candidate"], over=nncf_best["candidate"]),
            "rounds_faster": sum(mine < theirs for mine, theirs in pairs),
        }
    nncf_test = _predict(nncf_ac, nncf_best["runtime"], test.images, model) == test.labels
    result["nncf_accuracy_control"] = {
        **nncf_best,
        "all_runtimes": nncf_rows,
        "test_accuracy": float(nncf_test.mean()),
        "test_mcnemar_p": mcnemar_exact(
            _predict(fp32, nncf_best["runtime"], test.images, model) == test.labels, nncf_test
        )[2],
        "size_ratio": fp32.stat().st_size / nncf_best["file_bytes"],
    }
    if not chosen:
        result["shortfall_points"] = best["validation_drop_points"] - max_drop
    result["wall_seconds"] = time.perf_counter() - start
    return result
