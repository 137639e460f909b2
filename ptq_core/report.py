"""``ptq report``: the matrix's results, the studies, the archive breakdown and the saved speed, in one dict."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ptq_core.matrix import Cell
from ptq_core.results import collect
from ptq_core.speed import speed_rows
from ptq_core.workspace import Workspace


def build(ws: Workspace, studies: bool = True, benchmarks: Path | None = None) -> dict[str, Any]:
    from ptq_core.formats.pt2 import archive_bytes
    from ptq_core.studies import calibration_studies

    results = collect(ws)
    results["studies"] = calibration_studies(ws) if studies else {}
    results["pt2_archive_bytes"] = {}
    for name, path in (("fp32", ws.fp32("pt2")), ("uint8", ws.quantized(Cell("pytorch", "uint8")))):
        with open(path, "rb") as f:
            results["pt2_archive_bytes"][name] = asdict(archive_bytes(f))
    results["speed"] = speed_rows(benchmarks) if benchmarks else []
    results["speed_source"] = f"run {benchmarks.name[:4]}, {benchmarks.parent.name}" if benchmarks else None
    return results
