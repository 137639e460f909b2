"""The report's plots: every cell's accuracy with its 95 % interval, and accuracy against file size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptq_core.checks import MAX_ACCURACY_DROP_POINTS
from ptq_core.models import DEFAULT_MODEL


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = results.get("model", DEFAULT_MODEL)
    rows = [r for r in results["cells"] if not r["expected_failure"] and r["model"] == model and "accuracy" in r]
    fp32 = results["fp32"]["accuracy"] * 100
    backends = sorted({r["backend"] for r in rows})
    colours = dict(zip(backends, ("tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple"), strict=False))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        acc = r["accuracy"] * 100
        ax.errorbar(
            acc,
            i,
            xerr=[[acc - r["wilson_low"] * 100], [r["wilson_high"] * 100 - acc]],
            fmt="o",
            color=colours[r["backend"]],
            capsize=2,
        )
    ax.axvline(fp32, color="k", lw=1, label=f"FP32 {fp32:.2f} %")
    ax.axvline(
        fp32 - float(results.get("max_drop_points", MAX_ACCURACY_DROP_POINTS)),
        color="r",
        lw=1,
        ls="--",
        label="allowed drop",
    )
    ax.set_yticks(range(len(rows)), [r["cell"] for r in rows], fontsize=7)
    ax.set_xlabel("top-1 accuracy on the test split (%), 95 % Wilson interval")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    accuracy_png = out / "accuracy.png"
    fig.savefig(accuracy_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for backend, colour in colours.items():
        sel = [r for r in rows if r["backend"] == backend]
        ax.scatter(
            [r["file_bytes"] / 1024 for r in sel], [r["accuracy"] * 100 for r in sel], color=colour, label=backend
        )
    for fmt, size in results["fp32"]["file_bytes"].items():
        ax.scatter([size / 1024], [fp32], color="k", marker="*", s=120, label=f"FP32 .{fmt}")
    ax.set_xlabel("file size (KiB)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    size_png = out / "accuracy_vs_size.png"
    fig.savefig(size_png, dpi=110)
    plt.close(fig)
    return [accuracy_png, size_png]
