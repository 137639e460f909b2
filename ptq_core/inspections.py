"""What a model file holds and how OpenVINO runs it, read once across workers and runs and cached like artifacts:
reading a torch.export archive takes ~0.25 s and compiling a file ~0.1 s, their facts are a few hundred bytes.

What it stores (its format's :class:`Inspection`) is keyed by the file's digest, the format's reading code and the
versions of the format's libraries; how OpenVINO's CPU plugin runs it, by the file's digest, the compiling code,
OpenVINO's version and the CPU capability whose kernels the plugin picks. Without a cache folder, each is read afresh.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ptq_core import cache, sources
from ptq_core.formats import Inspection, format_of

INSPECTIONS_DIR = "inspections"


def inspection_of(artifact: Path, cache_dir: Path | None = None) -> Inspection:
    fmt = format_of(artifact)
    key = {
        "model_sha256": sources.file_digest(artifact),
        "code": cache.code_digest(("formats/__init__", f"formats/{fmt.module}", "inspections")),
        "versions": cache.library_versions(fmt.libraries),
        "model": artifact.name,
    }
    facts = _cached(cache_dir, f"{artifact.name}.json", key, lambda: dataclasses.asdict(fmt.inspect(artifact)))
    return Inspection(**{k: tuple(v) if isinstance(v, list) else v for k, v in facts.items()})  # type: ignore[arg-type]


def openvino_layers(artifact: Path, cache_dir: Path | None = None) -> list[tuple[str, str]]:
    """(layer type, runtime precision) of each op the ``openvino`` runtime's compile (f32 hint) runs; raises
    :class:`PTQError` when OpenVINO cannot compile the file."""
    from ptq_core.machine import cpu_capability

    def compiled() -> list[tuple[str, str]]:
        from ptq_core.adapters import openvino_model, worker_threads

        ops = openvino_model(artifact, worker_threads(), "f32").get_runtime_model().get_ordered_ops()
        info = [op.get_rt_info() for op in ops]
        return [(i["layerType"].astype(str), i["runtimePrecision"].astype(str)) for i in info]

    key = {
        "model_sha256": sources.file_digest(artifact),
        "code": cache.code_digest(("adapters", "inspections")),
        "versions": cache.library_versions(("openvino",)),
        "cpu": cpu_capability(),
        "model": artifact.name,
    }
    layers = _cached(cache_dir, f"{artifact.name}.openvino.json", key, compiled)
    return [(kind, precision) for kind, precision in layers]


def _cached(cache_dir: Path | None, name: str, key: Mapping[str, Any], read: Callable[[], Any]) -> Any:
    if cache_dir is None:
        return json.loads(json.dumps(read()))  # as a cached read returns it: lists, not tuples

    def build(tmp: Path) -> None:
        tmp.write_text(json.dumps(read(), sort_keys=True))

    return json.loads(cache.build_once(cache_dir / INSPECTIONS_DIR / name, key, build).read_text())
