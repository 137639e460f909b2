#!/usr/bin/env python3
"""Mutation testing of the suite's protections: each mutation weakens one protection by one line, and the
default suite's tests named beside it must then fail.

A check that only ever sees passing cells (and a few strict-xfail known failures) can be weakened anywhere
else without a test noticing; this proves it cannot. Each mutation is applied to a scratch copy of the
checkout (``ptq_core/``, ``tests/`` and the pytest configuration, never the checkout itself), its tests run
there (``pytest -x -q -p no:cacheprovider``, the scratch copy first on ``PYTHONPATH``) and must FAIL. The
models cache is the real ``models/`` folder (``PTQ_MODELS_DIR`` or ``<checkout>/models``), so nothing is
rebuilt; a mutation that changes an artifact key gets an empty one of its own, and its tests build nothing
real. The listed tests are first run once unmutated: they must pass, else a failure would "catch" anything.

    python .ci/mutations.py                 # every mutation; prints the table, exits 1 if any survives
    python .ci/mutations.py --only labels   # the mutations whose name contains "labels"
    python .ci/mutations.py --list          # the mutations and their tests, without running them
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("ptq_core", "tests", "conftest.py", "pytest.ini", "pyproject.toml")
TIMEOUT_S = 300

REFUSE = "tests/test_checks_refuse.py"
PROTECT = "tests/test_protections.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the checkout
    original: str  # the exact line, without its indentation (which the replacement keeps)
    replacement: str
    tests: tuple[str, ...]  # pytest node ids (a function's id runs every one of its parameters)
    keys: bool = False  # changes an artifact key: run against an empty models folder


MUTATIONS = (
    # --- the 12 of issue 24 (as today's code reads) ---
    Mutation(
        "artifact key without the backend's libraries",
        "ptq_core/workspace.py",
        '"versions": cache.library_versions((*FORMATS[backend.source].libraries, *backend.libraries)),',
        '"versions": cache.library_versions(FORMATS[backend.source].libraries),',
        (f"{PROTECT}::test_a_new_release_of_a_library_that_builds_an_artifact_rebuilds_it",),
        keys=True,
    ),
    Mutation(
        "accuracy: FP32 scored on the format's default runtime",
        "ptq_core/checks.py",
        "result, fp32 = ctx.result(), ctx.result(fp32=True)",
        "result, fp32 = ctx.result(), ctx.on(ctx.cell.runtimes[0].name).result(fp32=True)",
        (f"{REFUSE}::test_accuracy_is_against_fp32_on_the_same_runtime",),
    ),
    Mutation(
        "unpickler admits builtins.eval",
        "ptq_core/cifar10.py",
        '} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}',
        '} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("builtins", "eval")}',
        (
            f"{PROTECT}::test_a_batch_that_names_a_dangerous_global_is_refused_before_it_runs",
            f"{PROTECT}::test_the_unpickler_admits_exactly_what_a_data_batch_needs",
        ),
    ),
    Mutation(
        "8-bit weights: one quantized weight is enough",
        "ptq_core/checks.py",
        "if found.weight_ops == 0 or found.quantized_weight_ops != found.weight_ops:",
        "if found.quantized_weight_ops == 0:",
        (f"{REFUSE}::test_weights_8bit_refuses_a_float_weight_or_activation",),
    ),
    Mutation(
        "labels: > for >= (label == classes accepted)",
        "ptq_core/user_data.py",
        "if labels.min() < 0 or labels.max() >= num_classes:",
        "if labels.min() < 0 or labels.max() > num_classes:",
        (
            f"{PROTECT}::test_labels_lie_in_the_models_classes",
            f"{PROTECT}::test_ptq_run_refuses_labels_one_past_the_classes",
        ),
    ),
    Mutation(
        "known failures reach a user's model (prefix match)",
        "ptq_core/known_failures.py",
        "cell.model in self.models",
        "cell.model.startswith(self.models)",
        ("tests/test_failures_are_results.py::test_known_failures_match_only_what_they_were_measured_on",),
    ),
    Mutation(
        "size: file ratio over the payload bytes",
        "ptq_core/checks.py",
        "file_ratio = fp32.file_bytes / found.file_bytes",
        "file_ratio = fp32.file_bytes / found.payload_bytes",
        (f"{REFUSE}::test_size_refuses_a_bloated_file", f"{REFUSE}::test_file_ratio_limit"),
    ),
    Mutation(
        "size: payload ratio over the file bytes",
        "ptq_core/checks.py",
        "payload = fp32.float_weight_bytes / found.payload_bytes if found.payload_bytes else 0.0",
        "payload = fp32.float_weight_bytes / found.file_bytes if found.payload_bytes else 0.0",
        (f"{REFUSE}::test_payload_ratio_limit", f"{REFUSE}::test_size_passes_8bit_weights_in_a_small_file"),
    ),
    Mutation(
        "class drop scaled x50",
        "ptq_core/checks.py",
        "drops = {c: round((f - q) * 100, 1) for c, (f, q) in enumerate(zip(fp32, quant, strict=True))}",
        "drops = {c: round((f - q) * 50, 1) for c, (f, q) in enumerate(zip(fp32, quant, strict=True))}",
        (f"{REFUSE}::test_class_drop_limit",),
    ),
    Mutation(
        "class drop scaled x10",
        "ptq_core/checks.py",
        "drops = {c: round((f - q) * 100, 1) for c, (f, q) in enumerate(zip(fp32, quant, strict=True))}",
        "drops = {c: round((f - q) * 10, 1) for c, (f, q) in enumerate(zip(fp32, quant, strict=True))}",
        (f"{REFUSE}::test_class_drop_limit",),
    ),
    Mutation(
        "baseline under its own stack: correct counts only",
        "ptq_core/baselines.py",
        "if old == data:",
        'if old["correct"] == data["correct"]:',
        (f"{PROTECT}::test_swapped_flips_under_the_same_stack_fail",),
    ),
    Mutation(
        "OpenVINO: layer type misspelled",
        "ptq_core/checks.py",
        'weight_ops = [precision for kind, precision in layers if kind in ("Convolution", "FullyConnected", "MatMul")]',
        "weight_ops = [precision for kind, precision in layers "
        'if kind in ("Convolutions", "FullyConnected", "MatMul")]',
        (f"{REFUSE}::test_openvino_refuses_a_model_it_runs_partly_in_float",),
    ),
    Mutation(
        "granularity ignored",
        "ptq_core/checks.py",
        "if ctx.inspection.weight_granularities != (ctx.cell.granularity,):",
        "if not ctx.inspection.weight_granularities:",
        (f"{REFUSE}::test_granularity_refuses_other_scales",),
    ),
    Mutation(
        "default calibration from the test split",
        "ptq_core/calibration.py",
        'split: str = "train"  # the 10,000 scored test images never calibrate a default artifact',
        'split: str = "test"  # the 10,000 scored test images never calibrate a default artifact',
        ("tests/test_calibration.py::test_default_calibration_shares_no_image_with_the_scored_test_split",),
        keys=True,
    ),
    Mutation(
        "baseline drop in fractions, not points",
        "ptq_core/baselines.py",
        'drop = (old["correct"] - data["correct"]) * 100 / len(labels)',
        'drop = (old["correct"] - data["correct"]) / len(labels)',
        (f"{PROTECT}::test_the_baseline_tolerance_against_another_stack",),
    ),
    Mutation(
        "speed ratio inverted",
        "ptq_core/speed.py",
        'return timer.speedup("8bit", over="fp32")',
        'return timer.speedup("fp32", over="8bit")',
        (f"{PROTECT}::test_the_speed_ratio_is_8bit_over_fp32",),
    ),
    # --- the key's code ---
    Mutation(
        "artifact key's code digest without workspace.py and cache.py",
        "ptq_core/workspace.py",
        '[f"backends/{backend.name}", "backends/__init__", "calibration", "workspace", "cache"]',
        '[f"backends/{backend.name}", "backends/__init__", "calibration"]',
        (f"{PROTECT}::test_an_edit_to_the_code_that_builds_an_artifact_rebuilds_it",),
        keys=True,
    ),
    # --- one (or more) per check ---
    Mutation(
        "output shape: only the batch size compared",
        "ptq_core/checks.py",
        "if shape != (batch, classes):",
        "if shape[0] != batch:",
        (f"{REFUSE}::test_output_shape_refuses_a_model_answering_another_number_of_classes",),
    ),
    Mutation(
        "output shape: no batch of 1 asked",
        "ptq_core/eval.py",
        "shapes = {len(images[:n]): _scores(predict, images[:n], n).shape for n in (1, batch_size)}",
        "shapes = {len(images[:n]): _scores(predict, images[:n], n).shape for n in (batch_size,)}",
        (f"{REFUSE}::test_output_shape_refuses_a_model_that_answers_only_a_full_batch",),
    ),
    Mutation(
        "output shape: probabilities not compared",
        "ptq_core/checks.py",
        "if ctx.result(fp32=True).row_sum_error <= 1e-5:  # FP32 returns float probabilities: so must the 8-bit model",
        "if ctx.result(fp32=True).row_sum_error < 0:  # FP32 returns float probabilities: so must the 8-bit model",
        (f"{REFUSE}::test_output_shape_refuses_logits_where_fp32_answers_probabilities",),
    ),
    Mutation(
        "calibration: only the sample count compared",
        "ptq_core/checks.py",
        'if ctx.record.get("calibration") != asdict(calib.config):',
        'if ctx.record.get("calibration", {}).get("num_samples") != calib.config.num_samples:',
        (f"{REFUSE}::test_calibration_refuses_an_artifact_built_from_the_test_split",),
    ),
    Mutation(
        "calibration: two images apart per class pass as stratified",
        "ptq_core/checks.py",
        "if counts.max() - counts.min() > 1 or len(calib.labels) != calib.config.num_samples:",
        "if counts.max() - counts.min() > 2 or len(calib.labels) != calib.config.num_samples:",
        (f"{REFUSE}::test_calibration_stratified_within_one_image_per_class",),
    ),
    Mutation(
        "8-bit weights: activations not checked",
        "ptq_core/checks.py",
        "if not found.activations_quantized:",
        "if not found.activations_quantized and not found.weight_ops:",
        (f"{REFUSE}::test_weights_8bit_refuses_a_float_weight_or_activation",),
    ),
    Mutation(
        "dtypes: the named weight dtype among others passes",
        "ptq_core/checks.py",
        "if found.weight_dtypes != (stored.weights,):",
        "if stored.weights not in found.weight_dtypes:",
        (f"{REFUSE}::test_dtypes_refuse_what_the_dtype_name_does_not_store",),
    ),
    Mutation(
        "dtypes: activation dtypes not compared",
        "ptq_core/checks.py",
        "if not found.activation_dtypes or not set(found.activation_dtypes) <= set(stored.activations):",
        "if not found.activation_dtypes:",
        (f"{REFUSE}::test_dtypes_refuse_what_the_dtype_name_does_not_store",),
    ),
    Mutation(
        "granularity: the named one among others passes",
        "ptq_core/checks.py",
        "if ctx.inspection.weight_granularities != (ctx.cell.granularity,):",
        "if ctx.cell.granularity not in ctx.inspection.weight_granularities:",
        (f"{REFUSE}::test_granularity_refuses_other_scales",),
    ),
    Mutation(
        "accuracy: > for >= (exactly the limit fails)",
        "ptq_core/checks.py",
        "if drop > ctx.max_drop:",
        "if drop >= ctx.max_drop:",
        (f"{REFUSE}::test_accuracy_drop_limit",),
    ),
    Mutation(
        "accuracy: the drop in floats (3.00 points is 3.0000000000000027)",
        "ptq_core/checks.py",
        "drop = (fp32.correct * result.total - result.correct * fp32.total) * 100 / (fp32.total * result.total)",
        "drop = (fp32.accuracy - result.accuracy) * 100",
        (f"{REFUSE}::test_accuracy_drop_limit",),
    ),
    Mutation(
        "class drop: > for >= (exactly the limit fails)",
        "ptq_core/checks.py",
        "if drops[worst] > MAX_CLASS_DROP_POINTS:",
        "if drops[worst] >= MAX_CLASS_DROP_POINTS:",
        (f"{REFUSE}::test_class_drop_limit",),
    ),
    Mutation(
        "calibrator: one scale equal to minmax's is enough to fail",
        "ptq_core/checks.py",
        "if all(np.isclose(ours[name], minmax[name], rtol=1e-6) for name in ours):",
        "if any(np.isclose(ours[name], minmax[name], rtol=1e-6) for name in ours):",
        (f"{REFUSE}::test_calibrator_passes_a_model_whose_ranges_moved",),
    ),
    Mutation(
        "calibrator: scales compared loosely (30 %)",
        "ptq_core/checks.py",
        "if all(np.isclose(ours[name], minmax[name], rtol=1e-6) for name in ours):",
        "if all(np.isclose(ours[name], minmax[name], rtol=0.3) for name in ours):",
        (f"{REFUSE}::test_calibrator_passes_a_model_whose_ranges_moved",),
    ),
    Mutation(
        "baseline tolerance: > for >=",
        "ptq_core/baselines.py",
        "if drop > tolerance:",
        "if drop >= tolerance:",
        (f"{PROTECT}::test_the_baseline_tolerance_against_another_stack",),
    ),
    Mutation(
        "baseline: an upgrade judged against every CPU's baselines, not its own CPU's",
        "ptq_core/baselines.py",
        "return [p for p in found if cpu_of(p.parent.name) == cpu_of(here.name)] or found",
        "return found",
        ("tests/test_baseline_rule.py::test_an_upgrade_is_judged_against_its_own_cpus_baselines_not_another_cpus",),
    ),
    Mutation(
        "blame: an evaluation at exactly half the allowed drop is blamed",
        "ptq_core/blame_report.py",
        'if -entry["delta_points"] > allowed or round(class_drop_points(entry, fp32[rt]), 1) > MAX_CLASS_DROP_POINTS:',
        'if -entry["delta_points"] >= allowed or round(class_drop_points(entry, fp32[rt]), 1) > MAX_CLASS_DROP_POINTS:',
        (
            "tests/test_blame_report.py::"
            "test_an_evaluation_is_blamed_when_it_spends_over_half_the_allowed_drop_or_a_class_collapses",
        ),
    ),
    Mutation(
        "inspection cache key without the format's libraries",
        "ptq_core/inspections.py",
        '"versions": cache.library_versions(fmt.libraries),',
        '"versions": cache.library_versions(()),',
        (f"{PROTECT}::test_a_file_is_inspected_again_when_what_decides_its_inspection_changes",),
    ),
    Mutation(
        "inspection cache key without the format's reading code",
        "ptq_core/inspections.py",
        '"code": cache.code_digest(("formats/__init__", f"formats/{fmt.module}", "inspections")),',
        '"code": cache.code_digest(("formats/__init__", "inspections")),',
        (f"{PROTECT}::test_a_file_is_inspected_again_when_what_decides_its_inspection_changes",),
    ),
    Mutation(
        "OpenVINO layers cache key without the CPU kind",
        "ptq_core/inspections.py",
        '"cpu": cpu_capability(),',
        '"cpu": "any",',
        (f"{PROTECT}::test_a_file_is_compiled_again_for_its_openvino_layers_when_what_decides_them_changes",),
    ),
    Mutation(
        "blame cache key without the CPU kind",
        "ptq_core/blame_report.py",
        '"cpu": cpu_capability(),  # the kernels flip different images, so the disagreement set differs',
        '"cpu": "any",',
        ("tests/test_blame_report.py::test_a_blame_is_measured_once_per_artifact_and_runtime",),
    ),
    Mutation(
        "ptq report blames with --no-blame",
        "ptq_core/cli/report.py",
        "blame=not args.no_blame,",
        "blame=True,",
        ("tests/test_failures_are_results.py::test_ptq_report_marks_the_failed_evaluations_and_scores_the_rest",),
    ),
    Mutation(
        "PT2E blame compares a conv before the ReLU fused into its output quantization",
        "ptq_core/blame_pt2e.py",
        "fused = [u for u in node.users if op_name(u) in FUSED_OPS]",
        "fused = []",
        ("tests/test_blame.py::test_torchaos_debugger_measures_each_pt2e_layer_where_its_output_is_quantized",),
    ),
    Mutation(
        "PT2E blame's weight SQNR against the int8 weights' own dequantized values",
        "ptq_core/blame_pt2e.py",
        "weight = float_weights[name]",
        "weight = _attr(converted, node.args[1]).double()",
        ("tests/test_blame.py::test_torchaos_debugger_measures_each_pt2e_layer_where_its_output_is_quantized",),
    ),
)


@dataclass(frozen=True)
class Result:
    mutation: Mutation
    status: str  # "caught", "SURVIVED" or "BROKEN" (the mutation or its tests did not run)
    caught_by: str
    seconds: float


def apply(mutation: Mutation, text: str) -> str:
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == mutation.original]
    if len(hits) != 1:
        raise ValueError(f"{mutation.file}: {len(hits)} lines read {mutation.original!r} (need exactly 1)")
    line = lines[hits[0]]
    lines[hits[0]] = line[: len(line) - len(line.lstrip())] + mutation.replacement + "\n"
    return "".join(lines)


def scratch_copy(into: Path) -> Path:
    into.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, into / name)
    return into


def pytest_run(copy: Path, tests: tuple[str, ...], models: Path, jobs: int, stop_first: bool = True):
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),  # the scratch ptq_core, ahead of the editable install of the checkout
        "PTQ_MODELS_DIR": str(models),
        "PYTEST_ADDOPTS": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_XDIST_WORKER_COUNT": str(jobs),  # the runtimes' threads: the cores shared among the runs
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--models-dir={models}", *tests]
    if stop_first:
        cmd.insert(3, "-x")
    return subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ", 1)[0]
    return "?"


def run_one(mutation: Mutation, copy: Path, models: Path, scratch_models: Path, jobs: int) -> Result:
    start = time.monotonic()
    path = copy / mutation.file
    original = path.read_text()
    try:
        path.write_text(apply(mutation, original))
    except ValueError as exc:
        return Result(mutation, "BROKEN", str(exc), 0.0)
    try:
        done = pytest_run(copy, mutation.tests, scratch_models if mutation.keys else models, jobs)
    except subprocess.TimeoutExpired:
        return Result(mutation, "BROKEN", f"timed out after {TIMEOUT_S} s", time.monotonic() - start)
    finally:
        path.write_text(original)
    seconds = time.monotonic() - start
    if done.returncode == 0:
        return Result(mutation, "SURVIVED", "-", seconds)
    if done.returncode == 1:
        return Result(mutation, "caught", first_failure(done.stdout), seconds)
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    return Result(mutation, "BROKEN", f"pytest exit {done.returncode}: {' | '.join(tail)}", seconds)


def table(results: list[Result]) -> str:
    rows = [("mutation", "result", "caught by", "s")]
    rows += [(r.mutation.name, r.status, r.caught_by, f"{r.seconds:.1f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(" | ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + f" | {row[3]:>5}")
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths) + "-+------")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", metavar="TEXT", help="run the mutations whose name contains TEXT")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="mutations run at once")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.file}: {m.original}\n    -> {m.replacement}\n    " + "\n    ".join(m.tests))
        return 0
    if not chosen:
        print(f"no mutation's name contains {args.only!r}", file=sys.stderr)
        return 2
    models = Path(os.environ.get("PTQ_MODELS_DIR") or ROOT / "models").resolve()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ptq_mutations_") as tmp:
        copies: queue.Queue[Path] = queue.Queue()
        for i in range(max(1, args.jobs)):
            copies.put(scratch_copy(Path(tmp) / f"copy{i}"))
        scratch_models = Path(tmp) / "models"  # for the mutations that change an artifact key

        # the tests, unmutated: they must pass, or their failure would "catch" every mutation
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        copy = copies.get()
        clean = pytest_run(copy, tests, models, 1, stop_first=False)
        copies.put(copy)
        if clean.returncode != 0:
            print(clean.stdout[-4000:] + clean.stderr[-2000:])
            print(f"the mutations' tests fail on the unmutated code (pytest exit {clean.returncode}): fix them first")
            return 1
        print(f"{len(tests)} tests pass unmutated ({time.monotonic() - started:.0f} s); {len(chosen)} mutations")

        def run(mutation: Mutation) -> Result:
            copy = copies.get()
            try:
                return run_one(mutation, copy, models, scratch_models, args.jobs)
            finally:
                copies.put(copy)

        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(run, chosen))
    print(table(results))
    survived = [r for r in results if r.status != "caught"]
    print(
        f"{len(results) - len(survived)} of {len(results)} mutations caught in {time.monotonic() - started:.0f} s"
        + (f"; NOT caught: {', '.join(r.mutation.name for r in survived)}" if survived else "")
    )
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
