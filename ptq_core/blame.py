"""Layer blame: which conv/linear layers a quantized cell loses its accuracy in, on one runtime.

Each layer is left alone in float and ranked by the images it wins back among those FP32 and the cell classify
differently (the disagreement set: every image the cell lost or gained is there, so the drop is counted on it
exactly); the top few are then scored on the whole test split. An ONNX (QDQ) cell's layer is put back in float
in its own graph (``blame_onnx.layer_in_float``), so a given artifact is blamed as it is; a PT2E cell's is
rebuilt with the layer in float (``tune.candidates.build``). Beside each layer: the SQNR of its 8-bit output
and of its weights against FP32, and the range the calibrator chose for its output against FP32's (ONNX:
``blame_onnx``, on the artifact's own graph; PT2E: ``blame_pt2e``, through torchao's numeric debugger).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core import blame_onnx, blame_pt2e, cache, sources
from ptq_core.calibration import CalibrationConfig
from ptq_core.errors import PTQError
from ptq_core.eval import predict_scores
from ptq_core.matrix import Cell
from ptq_core.predictions import predictions_on_test
from ptq_core.runtimes import runtimes_for
from ptq_core.sqnr import MAX_IMAGES, activation_sqnr
from ptq_core.tune.candidates import build
from ptq_core.workspace import ArtifactStore

BLAME_DIR = "blame"  # under the models folder: the variants with one layer in float
# a ranking on 1,000 disagreeing images separates layers a few dozen images apart, and the top ones are then scored
# on the whole test split: on a collapsed cell (7,500 disagreeing) it cuts the blame's cost by half
RANKED_IMAGES = 1000
CONFIRMED = 3  # layers scored on the whole test split: the ranking's top, where a wrong order would mislead
WIDE_RANGE = 2.0  # a calibrated range over twice what FP32 reaches wastes at least one of the 8 bits


@dataclass(frozen=True)
class LayerBlame:
    layer: str  # as the backend's ``quantize(..., float_layers=...)`` names it
    position: int  # its place among the layers, in the order the backend lists them (the graph's)
    regained_images: int  # on the disagreement set: images right with the layer in float, less those right without
    regained_points: float | None = None  # on the whole test split (None: not among the confirmed)
    output_tensor: str | None = None  # the tensor its output quantization quantizes (ONNX; None: float output)
    output_sqnr_db: float | None = None  # that tensor against FP32, end to end (includes earlier layers' error)
    local_sqnr_db: float | None = None  # its output quantization alone (blame_onnx.local_sqnr)
    weight_sqnr_db: float | None = None
    calibrated_range: tuple[float, float] | None = None  # the calibrator's range for its output
    float_range: tuple[float, float] | None = None  # what FP32's output reaches on the disagreement images

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Blame:
    cell: str
    runtime: str
    artifact: str
    test_images: int
    fp32_correct: int
    cell_correct: int
    disagreement: int  # test images FP32 and the cell classify differently
    layers: tuple[LayerBlame, ...]  # most regained first
    ranked_on: int | None = None  # disagreeing images the layers were ranked on (None: every one)

    @property
    def drop_points(self) -> float:
        return (self.fp32_correct - self.cell_correct) / self.test_images * 100

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Blame:
        """The record ``as_json`` wrote (a cached or reported blame)."""
        names = {f.name for f in fields(cls)} - {"layers"}

        def layer(row: dict[str, Any]) -> LayerBlame:
            ranges: dict[str, Any] = {k: tuple(v) for k, v in row.items() if k.endswith("_range") and v is not None}
            return LayerBlame(**{**row, **ranges})

        layers = tuple(layer(row) for row in data["layers"])
        return cls(**{k: v for k, v in data.items() if k in names}, layers=layers)

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "layers"},
            "drop_points": self.drop_points,
            "headline": self.headline(),
            "layers": [layer.as_json() for layer in self.layers],
        }

    def headline(self) -> str:
        """One line: the drop, what the top layer regains alone in float, and what its 8 bits measure."""
        top = self.layers[0]
        words = [f"{self.cell} is {self.drop_points:.2f} points below FP32 on {self.runtime}"]
        if top.regained_points is not None:
            share = top.regained_points / self.drop_points
            words.append(f"leaving `{top.layer}` in float regains {top.regained_points:.2f} ({share:.0%} of the drop)")
        return "; ".join([*words, *_measured(top, sorted(self.layers, key=lambda r: r.position))])


def _measured(top: LayerBlame, graph_order: list[LayerBlame]) -> list[str]:
    """What stands out in the top layer's SQNR and ranges. The SQNR is its output quantization's alone: end to end,
    a spoiled layer drags every later one down with it. On ResNet8's entropy and distribution cells the ranking by
    the quantization's own SQNR agreed with what each layer regains in float (Spearman +0.92, +0.87), the one by
    end-to-end SQNR did not (-0.02, +0.20)."""
    words = []
    others = [r.local_sqnr_db for r in graph_order if r is not top and r.local_sqnr_db is not None]
    if top.local_sqnr_db is not None and others:
        span = f"{min(others):.1f}" if len(others) == 1 else f"{min(others):.1f} to {max(others):.1f}"
        words.append(f"its output quantization alone has {top.local_sqnr_db:.1f} dB SQNR, the other layers' {span} dB")
    elif top.output_tensor is None:
        words.append("its output is not quantized")
    weights = [r.weight_sqnr_db for r in graph_order if r is not top and r.weight_sqnr_db is not None]
    if top.weight_sqnr_db is not None and weights and top.weight_sqnr_db < min(weights):
        words.append(f"its weight SQNR is {top.weight_sqnr_db:.1f} dB, the others' at least {min(weights):.1f} dB")
    if top.calibrated_range and top.float_range:
        chosen, reached = top.calibrated_range[1], top.float_range[1]
        if top.calibrated_range[0] < 0 <= top.float_range[0]:
            words.append(f"its range goes down to {top.calibrated_range[0]:.2f} where FP32's output is never negative")
        if chosen < reached:
            words.append(f"the calibrator clipped its range at {chosen:.2f} where FP32 reaches {reached:.2f}")
        elif chosen > WIDE_RANGE * reached:  # every doubling of the range spends one of the 8 bits on no value
            words.append(f"the calibrator's range reaches {chosen:.2f} where FP32 reaches only {reached:.2f}")
    lowest = bool(others) and top.local_sqnr_db is not None and top.local_sqnr_db <= min(others)
    if len(words) == 1 and top.local_sqnr_db is not None and not lowest:
        # measured on an AVX2 CPU without VNNI: ORT's u8s8 kernels saturate in the first conv's integer sums, which
        # the QDQ graph's values (and so every SQNR here) do not show, and leaving it in float regains 98-100 %
        words.append(
            "none of its SQNR or ranges stands out: what it loses is in how the runtime computes it (an integer "
            "sum that saturates), or in how much the layers after it amplify its error"
        )
    return words


def _number(value: float | None, spec: str, missing: str) -> str:
    return missing if value is None else format(value, spec)


def _span(value: tuple[float, float] | None, missing: str) -> str:
    return missing if value is None else f"[{value[0]:.2f}, {value[1]:.2f}]"


def format_table(blame: Blame) -> str:
    """A markdown table of the layers, most regained first, under the headline."""
    ranked = f"{blame.ranked_on} of the {blame.disagreement}" if blame.ranked_on else str(blame.disagreement)
    lines = [
        blame.headline(),
        "",
        f"| rank | layer | regained of {ranked} disagreeing images | regained on the test split "
        "(points) | output SQNR (dB) | its quantization alone (dB) | weight SQNR (dB) | calibrated output range | "
        "FP32 output range |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for rank, r in enumerate(blame.layers, start=1):
        output = "float output" if r.output_tensor is None else "-"
        lines.append(
            f"| {rank} | {r.layer} | {r.regained_images:+d} | {_number(r.regained_points, '+.2f', '-')} | "
            f"{_number(r.output_sqnr_db, '.1f', output)} | {_number(r.local_sqnr_db, '.1f', output)} | "
            f"{_number(r.weight_sqnr_db, '.1f', '-')} | "
            f"{_span(r.calibrated_range, output)} | {_span(r.float_range, output)} |"
        )
    return "\n".join(lines)


def runtime_of(cell: Cell, runtime: str | None) -> str:
    """``runtime``, checked to score the cell's artifacts; None: the first runtime of its format."""
    names = [r.name for r in runtimes_for(cell.backend_spec.format)]
    if runtime is None:
        return cell.runtimes[0].name
    if runtime not in names:
        raise PTQError(f"runtime {runtime!r} does not score {cell.id}'s artifacts: choose one of {', '.join(names)}")
    return runtime


def _layers(ws: ArtifactStore, cell: Cell, config: CalibrationConfig) -> tuple[str, ...]:
    mixed = cell.backend_spec.mixed_precision
    if mixed is None:
        raise PTQError(
            f"{cell.id}: backend {cell.backend} declares no mixed precision (Backend.mixed_precision), so no layer "
            "of it can be left in float; blame a cell of another backend, or declare its layers"
        )
    layers = mixed.layers(ws.build_inputs(cell, config)[0])
    if not layers:
        raise PTQError(f"{cell.id}: its model has no conv or linear layer to leave in float, so none can be blamed")
    return layers


def _quiet(_: str) -> None:
    pass


def _onnx_variants(ws: ArtifactStore, cell: Cell, artifact: Path) -> tuple[Path, Callable[[str], Path]]:
    """The pre-processed FP32 model, and ``layer -> artifact with that layer in float``, each built once."""
    fp32 = ws.fp32("onnx", cell.model)
    code, versions = cache.code_digest(["blame_onnx"]), cache.library_versions(("onnx", "onnxruntime"))
    pre_path = ws.models_dir / BLAME_DIR / f"{fp32.stem}-preprocessed.onnx"
    pre_key = {"artifact": pre_path.name, "fp32_sha256": sources.file_digest(fp32), "code": code, "versions": versions}
    pre = cache.build_once(pre_path, pre_key, lambda tmp: blame_onnx.preprocess(fp32, tmp))
    digest = sources.file_digest(artifact)

    def variant(layer: str) -> Path:
        path = ws.models_dir / BLAME_DIR / f"{artifact.stem}-{digest[:12]}-{layer}-float.onnx"
        key = {"artifact": path.name, "source_sha256": digest, "layer": layer, **pre_key}
        return cache.build_once(path, key, lambda tmp: blame_onnx.layer_in_float(artifact, pre, layer, tmp))

    return pre, variant


def _onnx_facts(
    ws: ArtifactStore, cell: Cell, artifact: Path, pre: Path, layers: list[LayerBlame], images: np.ndarray
) -> list[LayerBlame]:
    """``layers`` with their output and weight SQNR and their output's calibrated and FP32 ranges."""
    images = images[:MAX_IMAGES]
    quantization = {r.layer: blame_onnx.layer_quantization(artifact, pre, r.layer) for r in layers}
    tensors = [q.output_tensor for q in quantization.values() if q.output_tensor]
    ranges = blame_onnx.float_ranges(pre, tensors, images)
    sqnr = {r.tensor: r.sqnr_db for r in activation_sqnr(ws.fp32("onnx", cell.model), artifact, images)}
    local = blame_onnx.local_sqnr(artifact, pre, [r.layer for r in layers], images)
    return [
        replace(
            r,
            output_tensor=(tensor := quantization[r.layer].output_tensor),
            output_sqnr_db=sqnr.get(tensor) if tensor else None,
            local_sqnr_db=local.get(r.layer),
            weight_sqnr_db=quantization[r.layer].weight_sqnr_db,
            calibrated_range=quantization[r.layer].calibrated_range,
            float_range=ranges.get(tensor) if tensor else None,
        )
        for r in layers
    ]


def _pt2e_facts(
    ws: ArtifactStore, cell: Cell, config: CalibrationConfig, layers: list[LayerBlame], images: np.ndarray
) -> list[LayerBlame]:
    """``layers`` with what torchao's numeric debugger measures of each, on the cell calibrated again in memory."""
    facts = blame_pt2e.layer_facts(ws.build_inputs(cell, config)[0], cell, [r.layer for r in layers], images)
    return [
        replace(
            r,
            output_tensor=(f := facts[r.layer]).output_node,
            output_sqnr_db=f.output_sqnr_db,
            local_sqnr_db=f.local_sqnr_db,
            weight_sqnr_db=f.weight_sqnr_db,
            calibrated_range=f.calibrated_range,
            float_range=f.float_range,
        )
        for r in layers
    ]


def _below_fp32(ws: ArtifactStore, cell: Cell, artifact: Path, rt: str) -> tuple[np.ndarray, np.ndarray]:
    """FP32's and the artifact's test predictions on ``rt``; refused when the artifact is not below FP32."""
    labels = ws.split("test").labels
    reference = predictions_on_test(ws, ws.fp32(cell.backend_spec.format, cell.model), rt, cell.model)
    predicted = predictions_on_test(ws, artifact, rt, cell.model)
    fp32_correct, cell_correct = (int((p == labels).sum()) for p in (reference, predicted))
    if cell_correct >= fp32_correct:
        raise PTQError(
            f"{cell.id} scores {cell_correct} of {len(labels)} test images on {rt}, FP32 {fp32_correct}: it does "
            "not drop, so there is nothing to blame; explain a cell that scores below FP32"
        )
    return reference, predicted


def blame(
    ws: ArtifactStore,
    cell: Cell,
    runtime: str | None = None,
    artifact: Path | None = None,
    config: CalibrationConfig = CalibrationConfig(),
    confirmed: int = CONFIRMED,
    say: Callable[[str], None] = _quiet,
) -> Blame:
    """The cell's layers on ``runtime`` (default: its first), ranked by what each regains alone in float.

    Args:
        artifact: an ONNX cell's QDQ model to blame instead of the cell's own build (e.g. a modified copy).
        confirmed: how many of the top layers are scored on the whole test split.
        say: progress lines (a build per layer).
    """
    rt, layers = runtime_of(cell, runtime), _layers(ws, cell, config)
    is_onnx = cell.backend_spec.format == "onnx"
    if artifact is not None and not is_onnx:
        raise PTQError(f"{cell.id}: its layers are left in float by rebuilding the cell, so pass no artifact")
    artifact = artifact or ws.quantized(cell, config)
    test, model = ws.split("test"), cell.model
    reference, predicted = _below_fp32(ws, cell, artifact, rt)
    fp32_correct, cell_correct = (int((p == test.labels).sum()) for p in (reference, predicted))
    everywhere = np.flatnonzero(reference != predicted)
    disagree = everywhere
    if len(everywhere) > RANKED_IMAGES:  # a collapsed cell disagrees on thousands: rank on an even sample of them
        disagree = np.unique(np.linspace(0, len(everywhere) - 1, RANKED_IMAGES).round().astype(int))
        disagree = everywhere[disagree]
    images, labels = test.images[disagree], test.labels[disagree]
    pre, variant = _onnx_variants(ws, cell, artifact) if is_onnx else (None, None)
    in_float = variant or (lambda layer: build(ws, cell, config, (layer,)))
    base = int((predicted[disagree] == labels).sum())
    regained = {}
    for i, layer in enumerate(layers, start=1):
        say(f"[{i}/{len(layers)}] {cell.id}: {layer} in float, on {len(disagree)} disagreeing images")
        regained[layer] = int((predict_scores(in_float(layer), images, cell.model_spec, rt).argmax(1) == labels).sum())
    ranked = sorted(layers, key=lambda k: base - regained[k])  # stable: graph order among ties
    points: dict[str, float] = {}
    for layer in ranked[:confirmed]:
        say(f"{cell.id}: {layer} in float, on the {len(test.labels)} test images")
        hits = int((predictions_on_test(ws, in_float(layer), rt, model) == test.labels).sum())
        points[layer] = (hits - cell_correct) / len(test.labels) * 100
    # a layer in float also changes images outside the disagreement set: among the confirmed, the test split decides
    ranked = sorted(points, key=lambda k: -points[k]) + ranked[len(points) :]
    rows = [LayerBlame(k, layers.index(k), regained[k] - base, points.get(k)) for k in ranked]
    say(f"{cell.id}: SQNR and ranges of each layer on {min(len(disagree), MAX_IMAGES)} disagreeing images")
    if pre is not None:
        rows = _onnx_facts(ws, cell, artifact, pre, rows, images)
    else:
        rows = _pt2e_facts(ws, cell, config, rows, images[:MAX_IMAGES])
    return Blame(
        cell.id,
        rt,
        artifact.name,  # not its folder: shards and caches elsewhere blame the same file alike
        len(test.labels),
        fp32_correct,
        cell_correct,
        len(everywhere),
        tuple(rows),
        len(disagree) if len(disagree) < len(everywhere) else None,
    )
