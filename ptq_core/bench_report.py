"""``ptq bench``'s table: every timed deployment, the ones that could not run, and the fastest honest 8-bit one per
(batch, threads) against ORT FP32 and the fastest float deployment, saying plainly where 8-bit is not worth it."""

from __future__ import annotations

from typing import Any


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def markdown(bench: dict[str, Any]) -> str:
    peak = bench["peak"]
    lines = [
        f"Deployments of {bench['model']} ({bench['macs_per_image']:,} MACs per image), timed in interleaved rounds "
        "per batch and thread count; `vs ORT FP32` is the median per-round ratio to ONNX Runtime FP32 in the same "
        "rounds, `vs best float` to the fastest float deployment within the allowed drop of ORT FP32 (OpenVINO "
        "runs FP32 in bf16 by default where the CPU has it). Every ONNX Runtime session lets idle threads sleep: "
        "spinning ones would take the cores of the deployment timed next.",
        "",
        "int8 peak: "
        + (peak["formula"] if peak else bench.get("peak_unknown") or "unknown")
        + "; `of peak` = GMAC/s / (peak per core x threads), for 8-bit deployments.",
        "",
        "| batch | threads | runtime | model | images/s | GMAC/s | vs ORT FP32 | vs best float | of peak | accuracy "
        "| Δ pts vs FP32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    timed = [r for r in bench["rows"] if r.get("images_per_s") is not None]
    for r in sorted(timed, key=lambda r: (r["batch"], r["threads"], -r["images_per_s"])):
        peak_text = f"{r['peak_fraction']:.0%}" if r["peak_fraction"] is not None else "-"
        lines.append(
            f"| {r['batch']} | {r['threads']} | {r['runtime']} | {r['model']} | {r['images_per_s']:,.0f} | "
            f"{r['gmac_per_s']:.0f} | {_x(r['vs_ort_fp32'])} | {_x(r.get('vs_best_float'))} | {peak_text} | "
            f"{r['accuracy']:.2%} | {-r['drop_points']:+.2f} |"
        )
    failed = {(r["runtime"], r["model"]): r for r in bench["rows"] if r.get("images_per_s") is None}
    if failed:
        lines += ["", f"{len(failed)} deployments could not run (the others were timed without them):", ""]
        lines += [f"- {m} on {rt}: {r['outcome']}: {r['reason']}" for (rt, m), r in sorted(failed.items())]
    lines += ["", "Fastest 8-bit deployment within the allowed accuracy drop of its FP32:", ""]
    for key, r in sorted(bench["fastest"].items()):
        verdict = ""
        if r.get("vs_best_float") is not None and r["vs_best_float"] < 1.1:
            verdict = (
                f": **8-bit is not worth it here**, the float deployment {r['best_float']} is "
                + ("faster" if r["vs_best_float"] < 1.0 else "within 10 %")
                + " with no calibration"
            )
        lines.append(
            f"- {key}: **{r['model']} on {r['runtime']}**, {_x(r['vs_ort_fp32'])} ORT FP32, "
            f"{_x(r.get('vs_best_float'))} the fastest float ({r.get('best_float')}), {r['accuracy']:.2%}{verdict}"
        )
    return "\n".join(lines) + "\n"
