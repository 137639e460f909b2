"""``ptq tune``'s output: the trace (json), the report (markdown) and the plot of validation accuracy against
speed, all read from the trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptq_core.output import finite
from ptq_core.render import size_change
from ptq_core.tune.protocol import SPEED_BATCH


def write(result: dict[str, Any], out: Path) -> list[Path]:
    """tune.json (the trace), tune.md, the plot of validation accuracy against speed, and the chosen model."""
    import shutil

    from ptq_core.output import write_folder

    pick = result.get("chosen") or result["best_found"]
    names = [Path(pick["artifact"]).name, "tune.json", "tune.md", "tune.png"]

    def fill(folder: Path) -> None:
        shutil.copyfile(pick["artifact"], folder / names[0])
        (folder / "tune.json").write_text(json.dumps(finite(result), indent=1, sort_keys=True, allow_nan=False))
        (folder / "tune.md").write_text(markdown(result))
        plot(result, folder / "tune.png")

    write_folder(out, "tune", fill)
    return [out / name for name in names]


def markdown(result: dict[str, Any]) -> str:
    pick = result.get("chosen") or result["best_found"]
    lines = [
        *_verdict(result, pick),
        *_beside_nncf(result, pick),
        *_against_float(result, pick),
        *_failed(result),
        *_head_to_head(result),
        *_candidates(result),
    ]
    return "\n".join(lines) + "\n"


def _speed(row: dict[str, Any]) -> str:
    return f"{row['vs_ort_fp32']:.2f}x" if row.get("vs_ort_fp32") is not None else "untimed"


def _verdict(result: dict[str, Any], pick: dict[str, Any]) -> list[str]:
    if "chosen" in result:
        verdict = f"Chosen: **{pick['candidate']}**"
    else:
        verdict = (
            f"No candidate holds {result['max_drop_points']:g} points on validation; best found: "
            f"**{pick['candidate']}**, {result['shortfall_points']:.2f} points short"
        )
    low, high = pick["test_wilson_95"]
    return [
        verdict,
        "",
        f"- test accuracy {pick['test_accuracy']:.2%} (95 % CI {low:.2%}-{high:.2%}), FP32 "
        f"{pick['test_fp32_accuracy']:.2%} on {pick['runtime']}; McNemar p {pick['test_mcnemar_p']:.3g} "
        f"({pick['test_mcnemar_fp32_only']} images only FP32 gets right, "
        f"{pick['test_mcnemar_candidate_only']} only the chosen model)",
        f"- {_speed(pick)} ORT FP32 at batch {SPEED_BATCH} (1 thread), {size_change(pick['size_ratio'])} file; the "
        f"search took {result['wall_seconds']:.0f} s" + (" (stopped by --budget)" if result["stopped"] else ""),
        "",
    ]


def _beside_nncf(result: dict[str, Any], pick: dict[str, Any]) -> list[str]:
    nncf = result["nncf_accuracy_control"]
    return [
        "Side by side with NNCF's `quantize_with_accuracy_control` (same calibration and validation images, same "
        "max drop; served on its fastest runtime):",
        "",
        "| | validation Δ pts | test accuracy | McNemar p | vs ORT FP32 | file size | time to tune |",
        "|---|---|---|---|---|---|---|",
        f"| ptq tune: {pick['candidate']} | {-pick['validation_drop_points']:+.2f} | {pick['test_accuracy']:.2%} | "
        f"{pick['test_mcnemar_p']:.3g} | {_speed(pick)} | {size_change(pick['size_ratio'])} | "
        f"{result['wall_seconds']:.0f} s |",
        f"| NNCF: {nncf['candidate']} | {-nncf['validation_drop_points']:+.2f} | {nncf['test_accuracy']:.2%} | "
        f"{nncf['test_mcnemar_p']:.3g} | {nncf['vs_ort_fp32']:.2f}x | {size_change(nncf['size_ratio'])} | "
        f"{nncf['tune_seconds']:.0f} s |",
        "",
    ]


def _against_float(result: dict[str, Any], pick: dict[str, Any]) -> list[str]:
    if not result.get("best_float"):
        return []
    flt = result["best_float"]
    ratio = pick.get("vs_best_float")
    worth = (
        ""
        if ratio is None or ratio >= 1.1
        else (
            " **8-bit is not worth it here**: the float deployment needs no calibration and is "
            + ("faster." if ratio < 1.0 else "within 10 %.")
        )
    )
    return [
        f"Against the fastest float deployment on this machine, {flt['deployment']} ({flt['vs_ort_fp32']:.2f}x ORT "
        f"FP32; OpenVINO's default precision is bf16 where the CPU has it): the chosen model runs at "
        + (f"{ratio:.2f}x." if ratio is not None else "an untimed speed.")
        + worth,
        "",
    ]


def _failed(result: dict[str, Any]) -> list[str]:
    failed = result.get("failed_candidates")
    if not failed:
        return []
    return [
        f"{len(failed)} candidates failed (a runtime could not load or score them):",
        "",
        *(f"- {f['candidate']}: {f['outcome']}: {f['reason']}" for f in failed),
        "",
    ]


def _head_to_head(result: dict[str, Any]) -> list[str]:
    if "head_to_head" not in result:
        return []
    duel = result["head_to_head"]
    return [
        f"Head to head (batch {SPEED_BATCH}, 1 thread, {duel['rounds']} interleaved rounds of their own): "
        f"the chosen model runs at {duel['vs_nncf_accuracy_control']:.3f}x NNCF's speed, "
        f"faster in {duel['rounds_faster']} of {duel['rounds']} rounds.",
        "",
    ]


def _candidates(result: dict[str, Any]) -> list[str]:
    lines = [
        "| candidate | validation | Δ pts | predictions changed | vs ORT FP32 | file bytes |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["candidates"]:
        timed = f"{r['vs_ort_fp32']:.2f}x" if r.get("vs_ort_fp32") is not None else "-"
        lines.append(
            f"| {r['candidate']} | {r['validation_accuracy']:.2%} | {-r['validation_drop_points']:+.2f} "
            f"| {r['validation_changed']} | {timed} | {r['file_bytes']:,} |"
        )
    return lines


def plot(result: dict[str, Any], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in result["candidates"] if r.get("vs_ort_fp32") is not None]
    front = set(result["pareto"])
    pick = result.get("chosen") or result["best_found"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(
        [r["vs_ort_fp32"] for r in timed],
        [r["validation_accuracy"] * 100 for r in timed],
        color="tab:gray",
        label="candidates",
    )
    pts = sorted((r["vs_ort_fp32"], r["validation_accuracy"] * 100) for r in timed if r["candidate"] in front)
    if pts:
        ax.plot(*zip(*pts, strict=True), color="tab:blue", marker="o", label="Pareto front")
    ax.scatter(
        [pick.get("vs_ort_fp32", 0)],
        [pick["validation_accuracy"] * 100],
        color="tab:red",
        marker="*",
        s=160,
        label="chosen",
    )
    fp32 = result["fp32_validation_accuracy"].get(pick["runtime"], 0) * 100
    ax.axhline(fp32 - result["max_drop_points"], color="r", ls="--", lw=1, label="FP32 - max drop")
    ax.set_xlabel(f"speed, x ORT FP32 (batch {SPEED_BATCH}, 1 thread)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
