"""The run's results in one place: every cell against FP32, as JSON, a Markdown table and plots."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ptq_core import cache
from ptq_core.calibration import CalibrationConfig
from ptq_core.errors import PTQError
from ptq_core.inspection import summarize
from ptq_core.matrix import CELLS, EXPECTED_FAILURES, MAX_ACCURACY_DROP_POINTS, Cell
from ptq_core.predictions import predictions_on_test
from ptq_core.stats import mcnemar_exact, wilson_interval
from ptq_core.workspace import Workspace

FP32_CORRECT = 8719
# The ORT cell a PT2E cell is compared with: same activation/weight types, nearest calibrator.
ORT_TWIN_DTYPE = {"uint8": "u8s8", "int8": "int8"}
ORT_TWIN_CALIBRATOR = {
    "minmax": "minmax",
    "histogram": "entropy",
    "moving_average": "minmax",
    "percentile": "percentile",
}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return sorted(f for f in line.split(":")[-1].split() if f.startswith(("avx", "amx", "fma", "sse4")))


def cpu_capability() -> str:
    """The widest x86 int8 dot-product path the CPU offers: it decides ORT's and oneDNN's int8 kernels."""
    flags = set(cpu_flags())
    for flag, name in (
        ("amx_int8", "amx"),
        ("avx512_vnni", "avx512vnni"),
        ("avx_vnni", "avxvnni"),
        ("avx512bw", "avx512"),
        ("avx2", "avx2"),
    ):
        if flag in flags:
            return name
    return platform.machine()


def platform_id() -> str:
    """Names a baseline: CPU capability and the versions of every library that decides a prediction."""
    v = cache.library_versions()
    return (
        f"{platform.machine()}-{cpu_capability()}-ort{v['onnxruntime']}-torch{v['torch']}-"
        f"torchao{v['torchao']}-onnx{v['onnx']}-numpy{v['numpy']}"
    )


def ort_twin(cell: Cell) -> Cell | None:
    if cell.framework != "pytorch":
        return None
    return Cell("onnxruntime", ORT_TWIN_DTYPE[cell.dtype], ORT_TWIN_CALIBRATOR[cell.calibrator], cell.granularity)


def accuracy_row(
    predictions: np.ndarray, labels: np.ndarray, fp32_predictions: np.ndarray, held_out: np.ndarray
) -> dict[str, Any]:
    hits = predictions == labels
    correct = int(hits.sum())
    low, high = wilson_interval(correct, len(labels))
    b, c, p = mcnemar_exact(fp32_predictions == labels, hits)
    return {
        "correct": correct,
        "accuracy": correct / len(labels),
        "delta_points": (correct - FP32_CORRECT) / 100,
        "wilson_low": low,
        "wilson_high": high,
        "mcnemar_fp32_only": b,
        "mcnemar_cell_only": c,
        "mcnemar_p": p,
        "heldout_accuracy": float(hits[held_out].mean()),
        "agreement_fp32": float((predictions == fp32_predictions).mean()),
        "per_class_accuracy": [float(hits[labels == k].mean()) for k in range(10)],
        "predictions_sha256": hashlib.sha256(predictions.astype(np.uint8).tobytes()).hexdigest(),
    }


def collect(
    ws: Workspace, cells: tuple[Cell, ...] = CELLS, studies: bool = True, benchmarks: Path | None = None
) -> dict[str, Any]:
    """Build (or reuse) and evaluate every cell; everything the report and the baselines need."""
    labels = ws.split("test").labels
    calib = ws.calibration(CalibrationConfig())
    held_out = np.ones(len(labels), bool)
    held_out[calib.indices] = False
    fp32 = {fw: ws.fp32(fw) for fw in ("onnxruntime", "pytorch")}
    fp32_pred = predictions_on_test(ws, fp32["onnxruntime"])
    preds: dict[str, np.ndarray] = {}
    rows = []
    for cell in cells:
        path = ws.quantized(cell)
        preds[cell.id] = predictions_on_test(ws, path)
        summary = summarize(path, fp32[cell.framework])
        row = {
            "cell": cell.id,
            "framework": cell.framework,
            "dtype": cell.dtype,
            "calibrator": cell.calibrator,
            "granularity": cell.granularity,
            "artifact": path.name,
            "file_bytes": summary.file_bytes,
            "file_ratio": fp32[cell.framework].stat().st_size / summary.file_bytes,
            "payload_ratio": summary.payload_ratio,
            "expected_failure": EXPECTED_FAILURES.get(cell.id),
            **accuracy_row(preds[cell.id], labels, fp32_pred, held_out),
        }
        row["passes"] = row["delta_points"] >= -MAX_ACCURACY_DROP_POINTS
        rows.append(row)
    for row in rows:
        twin = ort_twin(Cell(row["framework"], row["dtype"], row["calibrator"], row["granularity"]))
        if twin is not None and twin.id in preds:
            row["ort_twin"] = twin.id
            row["agreement_ort_twin"] = float((preds[row["cell"]] == preds[twin.id]).mean())
    fp32_row = accuracy_row(fp32_pred, labels, fp32_pred, held_out)
    return {
        "platform": platform_id(),
        "versions": cache.library_versions(),
        "cpu_flags": cpu_flags(),
        "calibration": {
            "num_samples": calib.config.num_samples,
            "seed": calib.config.seed,
            "split": calib.config.split,
            "indices_sha256": hashlib.sha256(calib.indices.tobytes()).hexdigest(),
        },
        "fp32": {"file_bytes": {fw: p.stat().st_size for fw, p in fp32.items()}, **fp32_row},
        "cells": rows,
        "studies": calibration_studies(ws) if studies else {},
        "pytorch_archive_bytes": _pytorch_archive_bytes(fp32["pytorch"], ws.quantized(Cell("pytorch", "uint8"))),
        "speed": speed_rows(benchmarks) if benchmarks else [],
        "speed_source": f"run {benchmarks.name[:4]}, {benchmarks.parent.name}" if benchmarks else None,
    }


SWEEP_CELLS = (Cell("onnxruntime", "u8s8"), Cell("pytorch", "uint8", "histogram"))
SWEEP_SIZES = (10, 50, 200, 1000)
SQNR_CELL, SQNR_IMAGES = Cell("onnxruntime", "uint8", "entropy", "per_tensor"), 256  # the lossiest working cell
DEFAULT_CELLS = tuple(
    Cell(fw, d)
    for fw, dtypes in (("onnxruntime", ("int8", "uint8", "u8s8")), ("pytorch", ("uint8", "int8")))
    for d in dtypes
)


def calibration_studies(ws: Workspace) -> dict[str, list[dict[str, Any]]]:
    """Calibration from the train split (no test-set leakage), and accuracy against calibration size."""
    test = ws.split("test")

    def measure(cell: Cell, config: CalibrationConfig) -> dict[str, Any]:
        predictions = predictions_on_test(ws, ws.quantized(cell, config))
        hits = predictions == test.labels
        row = {
            "cell": cell.id,
            "split": config.split,
            "num_samples": config.num_samples,
            "accuracy": float(hits.mean()),
        }
        if config.split == "test":
            held_out = np.ones(len(hits), bool)
            held_out[ws.calibration(config).indices] = False
            row["heldout_accuracy"] = float(hits[held_out].mean())
        return row

    from ptq_core.sqnr import activation_sqnr

    sqnr = activation_sqnr(ws.fp32_onnx(), ws.quantized(SQNR_CELL), test.images[:SQNR_IMAGES].astype(np.float32))
    return {
        "sqnr": [{"cell": SQNR_CELL.id, "tensor": r.tensor, "op_type": r.op_type, "sqnr_db": r.sqnr_db} for r in sqnr],
        "train_split": [measure(cell, CalibrationConfig(split="train")) for cell in DEFAULT_CELLS],
        "size_sweep": [measure(cell, CalibrationConfig(num_samples=n)) for cell in SWEEP_CELLS for n in SWEEP_SIZES],
    }


def latest_benchmarks(folder: Path = Path(".benchmarks")) -> Path | None:
    """The newest run saved by ``pytest --benchmark-autosave`` (files are numbered 0001_..., 0002_...)."""
    runs = sorted(folder.glob("*/*.json"), key=lambda p: p.name)
    return runs[-1] if runs else None


def speed_rows(benchmark_json: Path) -> list[dict[str, Any]]:
    """images/s of every timed model, with its ratio to FP32 at the same batch and threads (eager for PyTorch)."""
    rows = []
    for bench in json.loads(benchmark_json.read_text())["benchmarks"]:
        info = bench.get("extra_info", {})
        if "images_per_s" not in info or not bench["name"].startswith(("test_onnxruntime[", "test_pytorch[")):
            continue
        framework = "onnxruntime" if bench["name"].startswith("test_onnxruntime") else "pytorch"
        rows.append(
            {
                "framework": framework,
                "model": info["model"],
                "batch": info["batch"],
                "threads": info["threads"],
                "images_per_s": info["images_per_s"],
                "gmac_per_s": info["mac_per_s"] / 1e9,
            }
        )
    for row in rows:
        fp32 = "fp32" if row["framework"] == "onnxruntime" else "fp32-eager"
        base = next(
            (
                r
                for r in rows
                if (r["framework"], r["model"], r["batch"], r["threads"])
                == (row["framework"], fp32, row["batch"], row["threads"])
            ),
            None,
        )
        row["vs_fp32"] = row["images_per_s"] / base["images_per_s"] if base else None
    return sorted(rows, key=lambda r: (r["framework"], r["batch"], r["threads"], -r["images_per_s"]))


def _speed_markdown(rows: list[dict[str, Any]], source: str) -> list[str]:
    lines = [
        "",
        f"Inference speed on the test images (`tox -e bench`, {source}); ratio to FP32 at the same batch "
        "and threads (PyTorch: to FP32 eager). Fastest 8-bit model per group in bold:",
        "",
        "| framework | model | batch | threads | images/s | GMAC/s | vs FP32 |",
        "|---|---|---|---|---|---|---|",
    ]
    fastest: dict[tuple[str, int, int], str] = {}
    for r in rows:
        if not r["model"].startswith("fp32"):
            fastest.setdefault((r["framework"], r["batch"], r["threads"]), r["model"])
    for r in rows:
        model = r["model"]
        if fastest.get((r["framework"], r["batch"], r["threads"])) == model:
            model = f"**{model}**"
        ratio = f"{r['vs_fp32']:.2f}x" if r["vs_fp32"] else "-"
        lines.append(
            f"| {r['framework']} | {model} | {r['batch']} | {r['threads']} | {r['images_per_s']:,.0f} | "
            f"{r['gmac_per_s']:.0f} | {ratio} |"
        )
    return lines


def _pytorch_archive_bytes(fp32: Path, quantized: Path) -> dict[str, dict[str, int]]:
    """Where a torch.export archive's bytes go: the 8-bit weights are a minority of the file."""
    from dataclasses import asdict

    from ptq_core.pt2e_quant import archive_bytes

    result = {}
    for name, path in (("fp32", fp32), ("uint8", quantized)):
        with open(path, "rb") as f:
            result[name] = asdict(archive_bytes(f))
    return result


def best_cell(results: dict[str, Any]) -> dict[str, Any]:
    """The most accurate passing cell; ties go to the smaller file."""
    passing = [r for r in results["cells"] if r["passes"]]
    return max(passing, key=lambda r: (r["correct"], -r["file_bytes"]))


def markdown(results: dict[str, Any]) -> str:
    fp32 = results["fp32"]
    best = best_cell(results)
    lines = [
        f"FP32: **{fp32['accuracy']:.2%}** ({fp32['correct']}/10000), 95 % CI {fp32['wilson_low']:.2%}-"
        f"{fp32['wilson_high']:.2%}. Calibration: {results['calibration']['num_samples']} stratified "
        f"{results['calibration']['split']} images, seed {results['calibration']['seed']}. "
        f"Held-out: the {10000 - results['calibration']['num_samples']} test images not used for calibration.",
        "",
        f"Best cell: **{best['cell']}** at {best['accuracy']:.2%} ({best['delta_points']:+.2f} points), "
        f"{best['file_ratio']:.2f}x smaller file.",
        "",
        "| cell | accuracy | Δ pts | 95 % CI | McNemar p | held-out | agree FP32 | agree ORT twin | payload | file "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["cells"]:
        if r["expected_failure"]:
            verdict = "known failure"
        elif not r["passes"]:
            verdict = "FAIL"
        elif r["mcnemar_p"] < 0.05 and r["delta_points"] < 0:
            verdict = "worse (significant)"
        else:
            verdict = "within noise" if r["mcnemar_p"] >= 0.05 else "better (significant)"
        lines.append(
            f"| {r['cell']} | {r['accuracy']:.2%} | {r['delta_points']:+.2f} | {r['wilson_low']:.1%}-"
            f"{r['wilson_high']:.1%} | {r['mcnemar_p']:.2g} | {r['heldout_accuracy']:.2%} | "
            f"{r['agreement_fp32']:.2%} | {_twin(r)} | {r['payload_ratio']:.2f}x | {r['file_ratio']:.2f}x | {verdict} |"
        )
    if results.get("pytorch_archive_bytes"):
        parts = results["pytorch_archive_bytes"]
        lines += [
            "",
            "Where the bytes of a PT2E `.pt` archive go (torch.export format, no pickle):",
            "",
            "| artifact | " + " | ".join(parts["fp32"]) + " |",
            "|---" * (len(parts["fp32"]) + 1) + "|",
        ]
        lines += [f"| {name} | " + " | ".join(f"{v:,}" for v in sizes.values()) + " |" for name, sizes in parts.items()]
    if results.get("speed"):
        lines += _speed_markdown(results["speed"], results["speed_source"])
    lines += _studies_markdown(results.get("studies") or {})
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    lines += ["", f"Platform `{results['platform']}`; {versions}."]
    return "\n".join(lines) + "\n"


def _twin(row: dict[str, Any]) -> str:
    return f"{row['agreement_ort_twin']:.2%} ({row['ort_twin']})" if "ort_twin" in row else "-"


def _studies_markdown(studies: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines: list[str] = []
    if studies.get("train_split"):
        lines += [
            "",
            "Calibrated on 200 stratified **train** images (no test-set leakage):",
            "",
            "| cell | accuracy |",
            "|---|---|",
        ]
        lines += [f"| {r['cell']} | {r['accuracy']:.2%} |" for r in studies["train_split"]]
    if studies.get("size_sweep"):
        lines += [
            "",
            "Calibration size (stratified test images, seed 42); held-out excludes them:",
            "",
            "| cell | images | accuracy | held-out |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['cell']} | {r['num_samples']} | {r['accuracy']:.2%} | {r['heldout_accuracy']:.2%} |"
            for r in studies["size_sweep"]
        ]
    if studies.get("sqnr"):
        from ptq_core.sqnr import TensorSQNR, format_table

        rows = [TensorSQNR(r["tensor"], r["op_type"], r["sqnr_db"]) for r in studies["sqnr"]]
        lines += [
            "",
            f"Where {studies['sqnr'][0]['cell']} loses accuracy: SQNR of each activation, FP32 vs "
            f"quantized, on {SQNR_IMAGES} test images (end to end, so each row includes the loss before it):",
            "",
            format_table(rows),
        ]
    return lines


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["cells"] if not r["expected_failure"]]
    fp32 = results["fp32"]["accuracy"] * 100
    colours = {"onnxruntime": "tab:blue", "pytorch": "tab:orange"}
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        acc = r["accuracy"] * 100
        ax.errorbar(
            acc,
            i,
            xerr=[[acc - r["wilson_low"] * 100], [r["wilson_high"] * 100 - acc]],
            fmt="o",
            color=colours[r["framework"]],
            capsize=2,
        )
    ax.axvline(fp32, color="k", lw=1, label="FP32 87.19 %")
    ax.axvline(fp32 - MAX_ACCURACY_DROP_POINTS, color="r", lw=1, ls="--", label="allowed drop")
    ax.set_yticks(range(len(rows)), [r["cell"] for r in rows], fontsize=7)
    ax.set_xlabel("top-1 accuracy on 10,000 CIFAR-10 test images (%), 95 % Wilson interval")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    accuracy_png = out / "accuracy.png"
    fig.savefig(accuracy_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for fw, colour in colours.items():
        sel = [r for r in rows if r["framework"] == fw]
        ax.scatter([r["file_bytes"] / 1024 for r in sel], [r["accuracy"] * 100 for r in sel], color=colour, label=fw)
    for fw, size in results["fp32"]["file_bytes"].items():
        ax.scatter([size / 1024], [fp32], color=colours[fw], marker="*", s=120, label=f"{fw} FP32")
    ax.set_xlabel("file size (KiB)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    size_png = out / "accuracy_vs_size.png"
    fig.savefig(size_png, dpi=110)
    plt.close(fig)
    return [accuracy_png, size_png]


def write(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    (out / "results.md").write_text(markdown(results))
    return [out / "results.json", out / "results.md", *plot(results, out)]


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, results: dict[str, Any], plot_png: Path, plot_dest: Path) -> None:
    """Replace the README's results section with this run's table and plot (never typed by hand)."""
    import shutil

    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise PTQError(f"{readme} has no {README_START} ... {README_END} section to fill")
    shutil.copyfile(plot_png, plot_dest)
    rel = plot_dest.resolve().relative_to(readme.resolve().parent)
    body = f"{markdown(results)}\n![accuracy of every cell with its 95 % interval]({rel})\n"
    head, rest = text.split(README_START, 1)
    readme.write_text(f"{head}{README_START}\n{body}{README_END}{rest.split(README_END, 1)[1]}")
