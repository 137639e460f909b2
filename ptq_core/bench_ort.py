"""What else ONNX Runtime can do with the u8s8 cell (``ptq bench --ort-attempts``): QOperator, uint8 input and
spinning threads, each timed against ORT FP32 in the same interleaved rounds, and where the cell's time goes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core.bench import BATCHES, THREADS
from ptq_core.formats.onnx import uint8_input
from ptq_core.matrix import Cell
from ptq_core.models import DEFAULT_MODEL
from ptq_core.speed import PairedTimer, float_images


def session(path: Path, threads: int, spinning: bool) -> Any:
    """An ONNX Runtime session whose idle threads sleep unless ``spinning``: spinning threads left by one
    deployment take the cores of the one timed next in the same rounds."""
    from ptq_core.adapters import onnxruntime_session

    return onnxruntime_session(path, threads, {"session.intra_op.allow_spinning": "1" if spinning else "0"})


def ort_attempts(
    ws: Any, model: str = DEFAULT_MODEL, rounds: int = 7, say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """What else ONNX Runtime can do with the u8s8 cell, each against ORT FP32 (threads sleeping) in the same rounds.

    Long because the variants, their accuracy and their rounds are one study, read top to bottom."""
    import tempfile

    from ptq_core.backends.onnxruntime import quantize_with_ranges

    cell = Cell("onnxruntime", "u8s8", model=model)
    qdq, fp32 = ws.quantized(cell), ws.fp32("onnx", model)
    ranges = next((ws.models_dir / "shared").glob(f"{model}-onnxruntime-ranges-minmax.json"))
    test = ws.split("test")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptq_ort_") as tmp:
        qop, u8in = Path(tmp) / "qoperator.onnx", Path(tmp) / "uint8_input.onnx"
        quantize_with_ranges(fp32, ranges, cell, qop, fmt="QOperator")
        uint8_input(qdq, u8in)
        variants: dict[str, tuple[Path, bool, bool]] = {  # path, spinning, uint8 input
            "fp32": (fp32, False, False),
            "fp32, spinning": (fp32, True, False),
            "u8s8 QDQ (the cell)": (qdq, False, False),
            "u8s8 QDQ, spinning": (qdq, True, False),
            "u8s8 QOperator": (qop, False, False),
            "u8s8 QDQ, uint8 input": (u8in, False, True),
            "u8s8 QDQ, uint8 input, spinning": (u8in, True, True),
        }
        accuracy = {}
        for name, (path, _, raw) in variants.items():
            s = session(path, 1, False)
            images = test.images if raw else float_images(test.images)
            preds = np.concatenate(
                [s.run(None, {s.get_inputs()[0].name: np.ascontiguousarray(images[i : i + 500])})[0].argmax(1)
                 for i in range(0, len(images), 500)]
            )  # fmt: skip
            accuracy[name] = float((preds == test.labels).mean())
        for batch in BATCHES:
            x = float_images(test.images[:batch])
            for threads in THREADS:
                # spinning sessions in their own rounds, against FP32 spinning too: their busy idle threads
                # would slow whatever runs next
                for spin in (False, True):
                    group = {n: v for n, v in variants.items() if v[1] == spin}
                    fns = {}
                    for name, (path, spinning, raw) in group.items():
                        s = session(path, threads, spinning)
                        feed = {s.get_inputs()[0].name: np.ascontiguousarray(test.images[:batch]) if raw else x}
                        fns[name] = functools.partial(s.run, None, feed)
                    say(f"ONNX Runtime attempts, batch {batch}, {threads} thread(s){', spinning' if spin else ''}")
                    timer = PairedTimer(fns)
                    for _ in range(rounds):
                        timer.round()
                    reference = "fp32, spinning" if spin else "fp32"
                    for name in group:
                        rows.append(
                            {
                                "attempt": name,
                                "batch": batch,
                                "threads": threads,
                                "images_per_s": batch / timer.median_seconds(name),
                                "vs_ort_fp32": timer.speedup(name, over=reference),
                                "reference": reference,
                                "accuracy": accuracy[name],
                            }
                        )
    return rows


def op_profile(path: Path, images: np.ndarray, runs: int = 20) -> dict[str, float]:
    """Share of ONNX Runtime's kernel time per op type (profiling on), 1 thread."""
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ptq_prof_") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            s.run(None, {s.get_inputs()[0].name: images})
        events = json.loads(Path(s.end_profiling()).read_text())
    time_by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            time_by_op[op] = time_by_op.get(op, 0.0) + e["dur"]
    total = sum(time_by_op.values())
    return {op: t / total for op, t in sorted(time_by_op.items(), key=lambda kv: -kv[1])}


def attempts_markdown(rows: list[dict[str, Any]], profile: dict[str, float]) -> str:
    lines = [
        "ONNX Runtime with the u8s8 cell, each attempt against ORT FP32 in the same interleaved rounds (spinning "
        "attempts against FP32 spinning, in rounds of their own):",
        "",
        "| attempt | batch | threads | images/s | vs ORT FP32 | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['attempt']} | {r['batch']} | {r['threads']} | {r['images_per_s']:,.0f} | {r['vs_ort_fp32']:.2f}x "
            f"| {r['accuracy']:.2%} |"
        )
    lines += ["", "Where the u8s8 cell's time goes (ORT profiling, batch 256, 1 thread): "
              + ", ".join(f"{op} {share:.1%}" for op, share in profile.items() if share >= 0.001)]  # fmt: skip
    return "\n".join(lines) + "\n"
