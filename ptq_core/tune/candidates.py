"""What ``ptq tune`` searches: every cell the store builds at each calibration size on each runtime that serves
it, the backends' calibrator variants, and builds with layers left in float (the backends' mixed precision)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ptq_core import cache
from ptq_core.backends import BACKENDS, MixedPrecision
from ptq_core.calibration import CalibrationConfig
from ptq_core.errors import PTQError
from ptq_core.known_failures import known_failure
from ptq_core.matrix import Cell
from ptq_core.runtimes import get_runtime, runtimes_for, serving
from ptq_core.tune.protocol import SPEED_BATCH, Protocol
from ptq_core.workspace import ArtifactStore

TUNE_DIR = "tune"  # under the models folder: the builds and predictions of the search
# Measured with torch 2.13: Inductor's x86 int8 kernels take uint8 activations. An int8 per-channel PT2E cell
# fails to compile (quantized::packed_weights_conv2drelu: "Input tensor should have uint8"), an int8 per-tensor
# one runs unfused, 2.3x slower than the uint8 cell.
UNSERVED = "PT2E cells with int8 activations: Inductor's x86 int8 kernels take uint8 activations"
# Histogram calibrators whose ranges cost far more on more images (entropy) or are known-bad (distribution)
ONE_SIZE_CALIBRATORS = ("entropy", "distribution")


@dataclass(frozen=True)
class Candidate:
    cell: Cell
    runtime: str
    path: Path
    float_layers: tuple[str, ...] = ()  # layers left in float (mixed precision), named as the backend takes them
    calibration: CalibrationConfig = CalibrationConfig()
    options: tuple[tuple[str, object], ...] = ()  # calibrator settings other than the cell's own

    @property
    def name(self) -> str:
        mixed = f"+{len(self.float_layers)}fp32" if self.float_layers else ""
        n = self.calibration.num_samples
        samples = "" if n == CalibrationConfig().num_samples else f"@{n}"
        options = "".join(f"[{k} {v}]" for k, v in self.options)
        return f"{self.cell.id}{samples}{options}{mixed} on {self.runtime}"


def candidate_runtimes(cell: Cell) -> tuple[str, ...]:
    """The runtimes a cell's artifact is a candidate on: those serving it at the timed batch and thread (a PT2E
    cell with int8 activations: none, ``UNSERVED``)."""
    return tuple(rt.name for rt in serving(cell) if rt.applies(SPEED_BATCH, 1))


def checked_as(runtime: str) -> str:
    """The runtime whose known failures a candidate on ``runtime`` has: its own, or (one that only deploys) its
    format's first scored runtime (PT2E on Inductor: eager torch's)."""
    rt = get_runtime(runtime)
    return rt.name if rt.scored else runtimes_for(rt.format)[0].name


def searched_cells(ws: ArtifactStore, model: str, patterns: tuple[str, ...]) -> tuple[Cell, ...]:
    """The store's cells of ``model`` that match a pattern (all, without one); refused when none is served."""
    every = ws.cells(model)
    cells = tuple(
        c for c in every if not patterns or any(fnmatch.fnmatch(c.id.removeprefix(f"{model}-"), p) for p in patterns)
    )
    if not any(candidate_runtimes(c) for c in cells):
        names = ", ".join(c.id.removeprefix(f"{model}-") for c in every[:2])
        raise PTQError(
            f"--cells {' '.join(patterns)} matches no searched cell of {model}: cells are named like {names}"
        )
    return cells


def cell_candidates(
    ws: ArtifactStore, cells: tuple[Cell, ...], protocol: Protocol, patterns: tuple[str, ...]
) -> list[Candidate]:
    """Each cell's artifact, built now, at each calibration size on each runtime serving it, but those measured
    far outside any drop (a runtime that only deploys: by the checks on its format's first runtime)."""
    found = [
        Candidate(c, rt, ws.quantized(c, config), calibration=config)
        for c in cells
        for config in protocol.configs
        if config == protocol.base or c.calibrator not in ONE_SIZE_CALIBRATORS
        for rt in candidate_runtimes(c)
        if not known_failure(c, "check_accuracy_vs_fp32", checked_as(rt))
    ]
    if not found:
        raise PTQError(
            f"--cells {' '.join(patterns)}: every cell it matches is a known accuracy failure; choose others"
        )
    return found


def calibrator_variants(ws: ArtifactStore, cells: tuple[Cell, ...], protocol: Protocol) -> Iterator[Candidate]:
    """The cells with the other calibrator settings their backend declares, each built as the search reaches it."""
    for c in cells:
        for options in c.backend_spec.calibrator_variants.get(c.calibrator, ()):
            for rt in candidate_runtimes(c):
                path = build(ws, c, protocol.base, options=options)
                yield Candidate(c, rt, path, calibration=protocol.base, options=tuple(options.items()))


def mixed_precision_bases(model: str) -> Iterator[tuple[Cell, MixedPrecision]]:
    """The cell of each backend that can leave layers in float, which mixed precision starts from."""
    for backend in BACKENDS.values():
        if backend.mixed_precision is not None:
            yield Cell(backend.name, backend.mixed_precision.dtype, model=model), backend.mixed_precision


def build(
    ws: ArtifactStore,
    cell: Cell,
    config: CalibrationConfig,
    float_layers: tuple[str, ...] = (),
    options: Mapping[str, object] | None = None,
) -> Path:
    """The cell with ``float_layers`` left in float or its calibrator's ``options`` changed, built once into the
    tune folder (named by the cell, the calibration set and a digest of the changes)."""
    inputs, common = ws.build_inputs(cell, config)
    changes = {"float_layers": list(float_layers), "calibrator_options": dict(options or {})}
    tag = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:12]
    path = ws.artifact_path(cell, config)
    path = ws.models_dir / TUNE_DIR / f"{path.stem}-{tag}{path.suffix}"
    key = {"artifact": path.name, "cell": cell.id, **changes, **common}
    return cache.build_once(path, key, lambda tmp: cell.backend_spec.quantize(inputs, cell, tmp, float_layers, options))
