"""Rendering: the results as a Markdown table, plots, the README's summary and the docs' full results section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptq_core import blame_report
from ptq_core.calibration import SCORED_SPLITS
from ptq_core.checks import MAX_ACCURACY_DROP_POINTS
from ptq_core.errors import PTQError
from ptq_core.evaluation import Outcome, failed, outcome_of, scored
from ptq_core.models import DEFAULT_MODEL
from ptq_core.results import best_cell, failed_evaluations
from ptq_core.studies import SQNR_IMAGES


def _verdict(r: dict[str, Any]) -> str:
    broken = [f"{rt} {e['outcome']}" for rt, e in r["runtimes"].items() if failed(e) and e.get("checked", True)]
    if broken:
        return "FAIL: " + ", ".join(broken)
    if r["expected_failure"]:
        return "known failure"
    if not r["passes"]:
        return "FAIL"
    if r["mcnemar_p"] < 0.05 and r["delta_points"] < 0:
        return "worse (significant)"
    return "within noise" if r["mcnemar_p"] >= 0.05 else "better (significant)"


def size_change(ratio: float) -> str:
    """An FP32-over-quantized file size ratio in words: "3.10x smaller", or "1.25x larger" below 1."""
    return f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger" if ratio > 0 else f"{ratio:.2f}x"


def _pct(value: float | None) -> str:
    """An accuracy, or n/a where there is none (no image held out of calibration: null in results.json)."""
    return "n/a" if value is None or value != value else f"{value:.2%}"


def _max_drop(results: dict[str, Any]) -> float:
    return float(results.get("max_drop_points", MAX_ACCURACY_DROP_POINTS))


def _other_runtimes(r: dict[str, Any]) -> str:
    """Accuracy on each further runtime, with its top-1 agreement with the cell's first runtime."""
    parts = [
        f"{name} {on['accuracy']:.2%} ({on['agreement_primary']:.1%})"
        if "agreement_primary" in on
        else f"{name} {on['accuracy']:.2%}"
        if scored(on)
        else f"{name} **{on['outcome']}**"
        for name, on in r["runtimes"].items()
        if name != r["runtime"]
    ]
    return "; ".join(parts) or "-"


def _failed_markdown(results: dict[str, Any]) -> list[str]:
    """Every evaluation a runtime failed, with the library's reason: the rest of the report went on without it."""
    known = [
        f"- {row['cell']} on {rt}: {entry['reason']} (known failure: {entry.get('known_failure')})"
        for row in results["cells"]
        for rt, entry in row["runtimes"].items()
        if outcome_of(entry) is Outcome.KNOWN_FAILURE
    ]
    failures = failed_evaluations(results)  # builds too: a cell whose quantizer raised has nothing to evaluate
    lines = []
    if failures:
        lines += ["", f"**{len(failures)} evaluations failed** (a runtime could not load or score the model):", ""]
        lines += [f"- {line}" for line in failures]
    if known:
        lines += ["", "Evaluations that fail as measured before on this CPU and library release:", "", *known]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The report as Markdown: the FP32 line, the best cell, the table of every cell, then each further section
    (long because the table's header and its row are written out column by column, side by side)."""
    fp32 = results["fp32"]
    best = best_cell(results)
    calib = results["calibration"]
    fp32_on = ", ".join(
        f"{rt} {row['accuracy']:.2%}" if scored(row) else f"{rt} {row['outcome']}"
        for rt, row in fp32["runtimes"].items()
    )
    # calibrated from the scored images: accuracy on the images that did not calibrate, beside the rest
    held_out = calib["split"] in SCORED_SPLITS
    calibrated = calib.get("note") or (
        f"{calib['num_samples']} stratified {calib['split']} images, seed {calib['seed']}: "
        "no scored test image calibrates a cell."
    )
    lines = [
        f"FP32: **{fp32['accuracy']:.2%}** ({fp32['correct']}/{fp32['total']}), 95 % CI {fp32['wilson_low']:.2%}-"
        f"{fp32['wilson_high']:.2%}"
        + (f", held-out {_pct(fp32['heldout_accuracy'])}" if held_out else "")
        + f"; by runtime: {fp32_on}. Calibration: {calibrated}",
        "",
        f"Best cell: **{best['cell']}** at {best['accuracy']:.2%} ({best['delta_points']:+.2f} points), "
        f"{size_change(best['file_ratio'])} file."
        if best
        else f"Best cell: none passes (every cell falls more than {_max_drop(results):g} points).",
        "",
        "Each cell is scored on every runtime that takes its format, against FP32 on the same runtime. "
        "The first columns are its first runtime (ONNX Runtime for ONNX files, torch for .pt2); "
        "`other runtimes` gives the accuracy elsewhere and, in brackets, top-1 agreement with the first.",
        "",
        "| cell | accuracy | Δ pts |" + (" held-out |" if held_out else "") + " 95 % CI | McNemar p | agree FP32 "
        "| other runtimes | agree twin | payload | file | verdict |",
        "|---|---|---|" + ("---|" if held_out else "") + "---|---|---|---|---|---|---|---|",
    ]
    for r in results["cells"]:
        twin = f"{r['agreement_twin']:.2%} ({r['twin']})" if "twin" in r else "-"
        if "accuracy" not in r:  # its first runtime failed: no scores to show
            blanks = " - |" * (5 if held_out else 4)  # Δ, held-out, CI, McNemar, agree FP32
            lines.append(
                f"| {r['cell']} | **{r['outcome']}** |{blanks} {_other_runtimes(r)} | {twin} | "
                f"{r['payload_ratio']:.2f}x | {r['file_ratio']:.2f}x | {_verdict(r)} |"
            )
            continue
        lines.append(
            f"| {r['cell']} | {r['accuracy']:.2%} | {r['delta_points']:+.2f} | "
            + (f"{_pct(r['heldout_accuracy'])} | " if held_out else "")
            + f"{r['wilson_low']:.1%}-"
            f"{r['wilson_high']:.1%} | {r['mcnemar_p']:.2g} | "
            f"{r['agreement_fp32']:.2%} | {_other_runtimes(r)} | {twin} | {r['payload_ratio']:.2f}x | "
            f"{r['file_ratio']:.2f}x | {_verdict(r)} |"
        )
    lines += _failed_markdown(results)
    lines += blame_report.markdown(results)
    lines += _models_side_by_side(results)
    if results.get("pt2_archive_bytes"):
        parts = results["pt2_archive_bytes"]
        lines += [
            "",
            "Where the bytes of a PT2E `.pt2` archive go (torch.export format, no pickle):",
            "",
            "| artifact | " + " | ".join(parts["fp32"]) + " |",
            "|---" * (len(parts["fp32"]) + 1) + "|",
        ]
        lines += [f"| {name} | " + " | ".join(f"{v:,}" for v in sizes.values()) + " |" for name, sizes in parts.items()]
    if results.get("speed"):
        lines += _speed_markdown(results["speed"], results["speed_source"])
    lines += _studies_markdown(results.get("studies") or {})
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    lines += ["", f"Versions: {versions}."]
    return "\n".join(lines) + "\n"


def _speed_markdown(rows: list[dict[str, Any]], source: str) -> list[str]:
    lines = [
        "",
        f"Inference speed on the test images (`tox -e bench`, {source}); ratio to FP32 at the same batch "
        "and threads (PyTorch: to FP32 eager). Fastest 8-bit model per group in bold:",
        "",
        "| runtime | model | batch | threads | images/s | GMAC/s | vs FP32 |",
        "|---|---|---|---|---|---|---|",
    ]
    fastest: dict[tuple[str, int, int], str] = {}
    for r in rows:
        if not r["model"].startswith("fp32"):
            fastest.setdefault((r["runtime"], r["batch"], r["threads"]), r["model"])
    for r in rows:
        model = r["model"]
        if fastest.get((r["runtime"], r["batch"], r["threads"])) == model:
            model = f"**{model}**"
        ratio = f"{r['vs_fp32']:.2f}x" if r["vs_fp32"] else "-"
        lines.append(
            f"| {r['runtime']} | {model} | {r['batch']} | {r['threads']} | {r['images_per_s']:,.0f} | "
            f"{r['gmac_per_s']:.0f} | {ratio} |"
        )
    return lines


def _models_side_by_side(results: dict[str, Any]) -> list[str]:
    """The cells every model runs, one column per model: accuracy and the drop from that model's FP32."""
    models = list(results.get("models", {}))
    if len(models) < 2:
        return []
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results["cells"]:
        by_model.setdefault(r["cell"].removeprefix(r["model"] + "-"), {})[r["model"]] = r
    lines = [
        "",
        "Models side by side (each against its own FP32: "
        + ", ".join(f"{m} {results['models'][m]['accuracy']:.2%}" for m in models)
        + "), on each cell's first runtime:",
        "",
        "| cell | " + " | ".join(models) + " |",
        "|---" * (len(models) + 1) + "|",
    ]
    for config, rows in by_model.items():
        if len(rows) == len(models) and all("accuracy" in row for row in rows.values()):
            lines.append(
                f"| {config} | "
                + " | ".join(f"{rows[m]['accuracy']:.2%} ({rows[m]['delta_points']:+.2f})" for m in models)
                + " |"
            )
    return lines


def _studies_markdown(studies: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines: list[str] = []
    if studies.get("test_split"):
        lines += [
            "",
            "The seed's protocol, 200 stratified **test** images, beside the default (200 train images). "
            "Held-out: the 9,800 test images the protocol did not calibrate on, FP32 on the same images:",
            "",
            "| cell | train-calibrated | test-calibrated | held-out | FP32 held-out |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['cell']} | {r['default_accuracy']:.2%} | {r['accuracy']:.2%} | {r['heldout_accuracy']:.2%} | "
            f"{r['heldout_fp32_accuracy']:.2%} |"
            for r in studies["test_split"]
        ]
    if studies.get("size_sweep"):
        lines += [
            "",
            "Calibration size (stratified train images, seed 42):",
            "",
            "| cell | images | accuracy |",
            "|---|---|---|",
        ]
        lines += [f"| {r['cell']} | {r['num_samples']} | {r['accuracy']:.2%} |" for r in studies["size_sweep"]]
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


def write(results: dict[str, Any], out: Path) -> list[Path]:
    from ptq_core.output import finite

    out.mkdir(parents=True, exist_ok=True)
    # a NaN (held-out accuracy when every scored image calibrates) is null: strict JSON, never NaN
    (out / "results.json").write_text(json.dumps(finite(results), indent=1, sort_keys=True, allow_nan=False))
    (out / "results.md").write_text(markdown(results))
    from ptq_core.plots import plot

    return [out / "results.json", out / "results.md", *plot(results, out)]


def summary(results: dict[str, Any]) -> str:
    """What a reader of the README needs first: per model FP32 and per backend its best passing cell, and how many
    cells pass, are known to fail or failed an evaluation (the full table is ``markdown``)."""
    lines = [
        "| model | FP32 | backend | best cell | accuracy | Δ pts | file | cells passing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    models = results.get("models") or {results.get("model", DEFAULT_MODEL): results["fp32"]}
    for model, fp32 in models.items():
        backends = dict.fromkeys(r["backend"] for r in results["cells"] if r["model"] == model)
        for backend in backends:
            rows = [r for r in results["cells"] if r["model"] == model and r["backend"] == backend]
            passing = [r for r in rows if r["passes"] and not r["expected_failure"]]
            best = max(passing, key=lambda r: (r["correct"], -r["file_bytes"]), default=None)
            known = sum(bool(r["expected_failure"]) for r in rows)
            count = f"{len(passing)} of {len(rows)}" + (f" ({known} known failures)" if known else "")
            if best is None:
                lines.append(f"| {model} | {fp32['accuracy']:.2%} | {backend} | none passes | - | - | - | {count} |")
                continue
            name = best["cell"].removeprefix(f"{model}-{backend}-")
            lines.append(
                f"| {model} | {fp32['accuracy']:.2%} | {backend} | {name} | "
                f"{best['accuracy']:.2%} | {best['delta_points']:+.2f} | {size_change(best['file_ratio'])} | {count} |"
            )
    broken = failed_evaluations(results)
    if broken:
        lines += ["", f"**{len(broken)} evaluations failed**: " + "; ".join(broken)]
    versions = results.get("versions", {})
    stack = ", ".join(
        f"{lib} {versions[lib]}" for lib in ("onnxruntime", "openvino", "torch", "nncf") if lib in versions
    )
    lines += ["", f"Measured on a CPU whose int8 path is `{results.get('cpu', '?')}`, with {stack}."]
    return "\n".join(lines).rstrip() + "\n"


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def fill_section(path: Path, body: str) -> None:
    """Replace what stands between ``path``'s results markers, each a line of its own (a marker quoted in the text
    is not one), with ``body``: generated, never typed by hand."""
    lines = path.read_text().splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if line.strip() in (RESULTS_START, RESULTS_END)]
    if [lines[i].strip() for i in marks] != [RESULTS_START, RESULTS_END]:
        raise PTQError(f"{path} has no {RESULTS_START} ... {RESULTS_END} section (each marker a line) to fill")
    start, end = marks
    path.write_text("".join([*lines[: start + 1], body, *lines[end:]]))


def update_readme(readme: Path, results: dict[str, Any], plot_png: Path, plot_dest: Path) -> list[Path]:
    """The README's results section gets the summary and the plot; ``docs/results.md`` beside it, where it has the
    markers, the full table. Returns the files written."""
    import shutil

    shutil.copyfile(plot_png, plot_dest)
    rel = plot_dest.resolve().relative_to(readme.resolve().parent)
    full = readme.parent / "docs" / "results.md"
    fill_section(
        readme,
        f"{summary(results)}\n![accuracy of every cell with its 95 % interval]({rel})\n\n"
        f"Every cell, runtime and study: [docs/results.md]({full.relative_to(readme.parent)}).\n",
    )
    if not full.is_file():
        return [readme, plot_dest]
    fill_section(full, markdown(results))
    return [readme, full, plot_dest]
