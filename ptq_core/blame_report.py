"""The blame table of every evaluation in a report that drops, as ``ptq report``, ``ptq run`` and ``--ptq-report``
write it: each (cell, runtime) scored more than half the allowed drop below FP32 there, or with a class that fell
more than the class check allows, is blamed once (``blame.blame``) and cached under the key of all that decides it.
An evaluation that cannot be blamed (a backend that leaves no layer in float, a runtime that raises) says why."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ptq_core import cache, sources
from ptq_core.checks import MAX_CLASS_DROP_POINTS
from ptq_core.evaluation import reason_of, scored
from ptq_core.machine import cpu_capability
from ptq_core.matrix import Cell
from ptq_core.predictions import EVAL_MODULES
from ptq_core.runtimes import get_runtime
from ptq_core.workspace import ArtifactStore

SHARE = 0.5  # of the allowed drop: a cell that spends over half its margin is explained before it fails
BLAME_MODULES = ("blame", "blame_onnx", "blame_pt2e", "sqnr", "calibration", "tune/candidates", *EVAL_MODULES)
NOT_BLAMED = "not_blamed"


def class_drop_points(entry: dict[str, Any], fp32: dict[str, Any]) -> float:
    """How far the worst class of a scored evaluation fell below FP32's on the same runtime, in points."""
    pairs = zip(fp32["per_class_accuracy"], entry["per_class_accuracy"], strict=True)
    return max(((f - q) * 100 for f, q in pairs), default=0.0)


def dropping(results: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, runtime) of every checked evaluation that drops: below FP32 by over SHARE of the allowed drop, or
    with a class below FP32's by over MAX_CLASS_DROP_POINTS (as ``check_no_class_collapses`` rounds it)."""
    allowed = results["max_drop_points"] * SHARE
    for row in results["cells"]:
        fp32 = results["models"][row["model"]]["runtimes"]
        for rt, entry in row["runtimes"].items():
            if not (entry.get("checked") and scored(entry) and scored(fp32.get(rt, {}))):
                continue
            if -entry["delta_points"] > allowed or round(class_drop_points(entry, fp32[rt]), 1) > MAX_CLASS_DROP_POINTS:
                yield row, rt


def cached(
    ws: ArtifactStore,
    cell: Cell,
    runtime: str | None = None,
    say: Callable[[str], None] = print,
    artifact: Path | None = None,
    confirmed: int | None = None,
) -> dict[str, Any]:
    """``blame.blame(...).as_json()``, measured once per artifact (default: the cell's), runtime, number confirmed,
    test data, CPU kind, code and library versions."""
    from ptq_core import blame

    rt = blame.runtime_of(cell, runtime)
    confirmed = blame.CONFIRMED if confirmed is None else confirmed
    fmt = cell.backend_spec.format
    path = artifact or ws.quantized(cell)
    key = {
        "artifact_sha256": sources.file_digest(path),
        "fp32_sha256": sources.file_digest(ws.fp32(fmt, cell.model)),
        "runtime": rt,
        "data_sha256": ws.data_sha256("test"),
        "confirmed": confirmed,
        "code": cache.code_digest((*BLAME_MODULES, f"backends/{cell.backend}")),
        "versions": cache.library_versions({*get_runtime(rt).libraries, "onnx", "onnxruntime", "torch", "torchao"}),
        "cpu": cpu_capability(),  # the kernels flip different images, so the disagreement set differs
    }

    measured: list[bool] = []

    def build(tmp: Path) -> None:
        found = blame.blame(ws, cell, rt, artifact=artifact, confirmed=confirmed, say=say)
        tmp.write_text(json.dumps(found.as_json(), indent=1, sort_keys=True))
        measured.append(True)

    name = f"{path.name}.{rt}.{confirmed}.blame.json"
    record = cache.build_once(ws.models_dir / blame.BLAME_DIR / name, key, build)
    if not measured:
        say(f"{cell.id} on {rt}: the blame measured before, from {record}")
    return json.loads(record.read_text())  # type: ignore[no-any-return]


def add(
    ws: ArtifactStore,
    results: dict[str, Any],
    cells: tuple[Cell, ...],
    say: Callable[[str], None],
    measure: Callable[[ArtifactStore, Cell, str, Callable[[str], None]], dict[str, Any]] = cached,
) -> None:
    """Each dropping evaluation's blame, as ``row["blame"][runtime]``: the table, or ``{NOT_BLAMED: reason}``."""
    by_id = {c.id: c for c in cells}
    for row, rt in dropping(results):
        say(f"{row['cell']} on {rt} drops: which layers lose it (each left alone in float)")
        try:
            found = measure(ws, by_id[row["cell"]], rt, say)
        except Exception as exc:  # a quantizer or runtime that fails on a variant: a result, the report goes on
            found = {NOT_BLAMED: reason_of(exc)}
        row.setdefault("blame", {})[rt] = found


def headlines(results: dict[str, Any]) -> list[str]:
    """One line per blamed evaluation, for a terminal."""
    return [
        f"why {row['cell']} on {rt}: not blamed: {entry[NOT_BLAMED]}" if NOT_BLAMED in entry else entry["headline"]
        for row in results["cells"]
        for rt, entry in row.get("blame", {}).items()
    ]


def markdown(results: dict[str, Any]) -> list[str]:
    """The section of results.md with every blame table (none: no section)."""
    from ptq_core.blame import Blame, format_table

    blamed = [(row["cell"], rt, entry) for row in results["cells"] for rt, entry in row.get("blame", {}).items()]
    if not blamed:
        return []
    lines = [
        "",
        "## Which layers the dropping cells lose their accuracy in",
        "",
        f"Every evaluation more than {results['max_drop_points'] * SHARE:g} points (half the allowed drop) below "
        f"FP32 on its runtime, or with a class more than {MAX_CLASS_DROP_POINTS:g} points below FP32's: each "
        "conv/linear layer left alone in float, ranked by the images it wins back among those FP32 and the cell "
        "classify differently, the top ones scored on the whole test split. `python -m ptq_core explain CELL "
        "--runtime RT` measures one on demand.",
    ]
    for cell, rt, entry in blamed:
        if NOT_BLAMED in entry:
            lines += ["", f"- {cell} on {rt}: not blamed: {entry[NOT_BLAMED]}"]
        else:
            lines += ["", f"### {cell} on {rt}", "", format_table(Blame.from_json(entry))]
    return lines
