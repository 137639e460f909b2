"""``ptq report``: the matrix's results, the studies, the archive breakdown and the saved speed, in one dict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ptq_core.errors import PTQError
from ptq_core.matrix import CELLS, Cell
from ptq_core.results import collect
from ptq_core.speed import speed_rows
from ptq_core.workspace import Workspace


def build(
    ws: Workspace,
    studies: bool = True,
    benchmarks: Path | None = None,
    cells: tuple[Cell, ...] = CELLS,
    archive: bool = True,
    blame: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The results of ``cells``; ``studies``: the calibration studies; ``archive``: where a .pt2's bytes go;
    ``blame``: which layers each dropping evaluation loses its accuracy in (``blame_report``)."""
    from ptq_core import blame_report
    from ptq_core.formats.pt2 import archive_bytes
    from ptq_core.studies import calibration_studies

    results = collect(ws, cells)
    if blame:
        blame_report.add(ws, results, cells, say)
    results["studies"] = calibration_studies(ws) if studies else {}
    results["pt2_archive_bytes"] = {}
    if archive:
        for name, path in (("fp32", ws.fp32("pt2")), ("uint8", ws.quantized(Cell("pytorch", "uint8")))):
            with open(path, "rb") as f:
                results["pt2_archive_bytes"][name] = asdict(archive_bytes(f))
    results["speed"] = speed_rows(benchmarks) if benchmarks else []
    results["speed_source"] = f"run {benchmarks.name[:4]}, {benchmarks.parent.name}" if benchmarks else None
    return results


# what every shard of one run must agree on; the cells (and the models and libraries they use) are what they split
EQUAL_KEYS = ("schema", "cpu_flags", "calibration", "min_payload_ratio", "max_drop_points")
UNION_KEYS = ("versions", "models", "failed_builds")
RUN_PATHS = ("onnx", "data", "calibration")  # where each machine of a sharded ``ptq run`` keeps the inputs


def merge(parts: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Shards' results (``pytest --splits N --group i --ptq-report DIR``) as the one run they are parts of."""
    from ptq_core.models import DEFAULT_MODEL

    if not parts:
        raise PTQError("ptq report --merge needs at least one shard's folder")
    merged: dict[str, Any] = {k: v for k, v in parts[0].items() if k != "cells"}
    for part, name in zip(parts[1:], names[1:], strict=True):
        for key in EQUAL_KEYS:
            if part.get(key) != merged.get(key):
                raise PTQError(
                    f"{name} differs from {names[0]} in {key!r}: shards of one run share the CPU, calibration and "
                    "thresholds; merge shards of the same run only"
                )
    for key in UNION_KEYS:
        union: dict[str, Any] = {}
        for part, name in zip(parts, names, strict=True):
            for k, v in part.get(key, {}).items():
                if union.setdefault(k, v) != v:
                    raise PTQError(f"{name} differs from another shard in {key} {k!r}: merge shards of one run only")
        merged[key] = union
    rows: dict[str, dict[str, Any]] = {}
    for part, name in zip(parts, names, strict=True):
        for row in part["cells"]:
            seen = rows.setdefault(row["cell"], row)
            if _comparable(seen) != _comparable(row):
                raise PTQError(f"cell {row['cell']} differs between shards ({name}): re-run them on one stack")
    merged["cells"] = sorted(rows.values(), key=_position)
    merged["model"] = DEFAULT_MODEL if DEFAULT_MODEL in merged["models"] else next(iter(merged["models"]))
    merged["fp32"] = merged["models"][merged["model"]]
    for key in ("studies", "pt2_archive_bytes", "speed", "speed_source"):
        if any(key in p for p in parts):
            merged[key] = next((p[key] for p in parts if p.get(key)), parts[0].get(key))
    if "run" in merged:  # shards of one ``ptq run --shard K/N``
        _merge_run(merged, parts, names)
    merged["shards"] = names
    return merged


def _merge_run(merged: dict[str, Any], parts: list[dict[str, Any]], names: list[str]) -> None:
    """The parts only ``ptq run`` writes: the same run settings, every shard's checks in cell order."""
    from ptq_core.results import failed_evaluations

    settings = [{k: v for k, v in p.get("run", {}).items() if k not in RUN_PATHS} for p in parts]
    for setting, name in zip(settings[1:], names[1:], strict=True):
        if setting != settings[0]:
            raise PTQError(f"{name} differs from {names[0]} in its run settings: merge the shards of one ptq run only")
    shards = sorted((p.get("shard") or {"index": 1, "of": 1})["index"] for p in parts)
    of = (parts[0].get("shard") or {"of": 1})["of"]
    if shards != list(range(1, of + 1)):
        raise PTQError(f"--merge got shards {shards} of {of}: give every shard's folder once")
    position = {row["cell"]: i for i, row in enumerate(merged["cells"])}
    merged["checks"] = sorted((c for p in parts for c in p.get("checks", [])), key=lambda c: position[c["cell"]])
    builds = merged["failed_builds"]
    merged["failed_builds"] = {cell: builds[cell] for cell in sorted(builds, key=lambda c: _position({"cell": c}))}
    merged["failed_evaluations"] = failed_evaluations(merged)
    merged.pop("shard", None)


SUITE_ORDER = {c.id: i for i, c in enumerate(CELLS)}
CONFIG_ORDER = {c.id.removeprefix(f"{c.model}-"): i for i, c in enumerate(CELLS) if c.model == CELLS[0].model}


def _position(row: dict[str, Any]) -> tuple[int, int]:
    """A cell's place in a single run: the suite's order, and a user's model's cells in the same configuration order."""
    if row["cell"] in SUITE_ORDER:
        return 0, SUITE_ORDER[row["cell"]]
    config = row["cell"].split("-", 1)[-1]  # without the model's name, which has no "-" (user._model_name)
    return 1, CONFIG_ORDER.get(config, len(CONFIG_ORDER))


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "artifact"}  # each shard builds into its own cache
