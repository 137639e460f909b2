"""``ptq run``: every cell of every backend that quantizes ONNX, on a user's classifier, checked and reported.

The same pieces as the suite: the backends' cells, ``ArtifactStore.quantized`` (built once, cached by
key), the checks library, ``results.collect`` and ``render.write``. The output folder is written beside
its final name and renamed into place, so it is never seen half-written.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ptq_core.checks import MAX_ACCURACY_DROP_POINTS, Context, Outcome, run_checks
from ptq_core.errors import PTQError
from ptq_core.evaluation import EvaluationFailed, reason_of, scored
from ptq_core.evaluation import Outcome as Evaluated
from ptq_core.evaluation import failed as failed_entry
from ptq_core.matrix import Cell
from ptq_core.output import check_replaceable, write_folder
from ptq_core.predictions import predictions_on_test
from ptq_core.runtimes import runtimes_for
from ptq_core.user import DEFAULT_SAMPLES, UserStore

ARTIFACTS = "artifacts"


@dataclass(frozen=True)
class RunInputs:
    """Everything that opens the same :class:`UserStore` again (in a build worker, too)."""

    onnx: Path
    data: Path
    calibration: Path | None = None
    samples: int = DEFAULT_SAMPLES
    seed: int = 42
    cache_dir: Path | None = None
    output: str | None = None  # the model's output that holds the scores (default: its first)
    option_prefix: str = "--"  # how messages spell the options: "--ptq-" for the pytest plugin
    name: str | None = None  # the model's name in cell ids (default: from the file's)

    def open(self) -> UserStore:
        return _open(self)


@functools.cache
def _open(inputs: RunInputs) -> UserStore:
    return UserStore.open(
        inputs.onnx,
        inputs.data,
        inputs.calibration,
        inputs.samples,
        inputs.seed,
        inputs.cache_dir,
        inputs.output,
        inputs.option_prefix,
        inputs.name,
    )


def user_cells(store: UserStore, patterns: tuple[str, ...] = ()) -> tuple[Cell, ...]:
    """Every cell of every backend that quantizes ONNX files, optionally only those matching a pattern."""
    return select_cells(store.cells(), patterns)


def select_cells(cells: tuple[Cell, ...], patterns: tuple[str, ...] = ()) -> tuple[Cell, ...]:
    """The cells whose name without the model matches one of ``patterns`` (all, with none)."""
    if not patterns:
        return cells
    chosen = tuple(c for c in cells if any(fnmatch.fnmatch(c.id.removeprefix(f"{c.model}-"), p) for p in patterns))
    if not chosen:
        names = ", ".join(c.id.removeprefix(f"{c.model}-") for c in cells[:3])
        raise PTQError(f"--cells {' '.join(patterns)} matches no cell: cells are named like {names}, ...")
    return chosen


def context(store: UserStore, max_drop: float) -> Callable[[Cell], Context]:
    return lambda cell: Context.of(store, cell, max_drop)


def checks_not_run(store: UserStore) -> dict[str, str]:
    if store.calib.labels is None:
        return {"check_calibration_stratified": f"{store.calibration_file} has no labels to stratify by"}
    return {}


def _build_in_worker(inputs: RunInputs, cell: Cell) -> tuple[str, float]:
    start = time.perf_counter()
    inputs.open().quantized(cell)
    return cell.id, time.perf_counter() - start


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """A build worker's initializer: the kernel sends it SIGTERM when the process that started it dies, killed
    by SIGKILL or SIGTERM, so an interrupted ``ptq run --jobs N`` leaves no worker building on as an orphan."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _Terminated(SystemExit):
    """SIGTERM while the workers build: the parent stops them and exits 128 + 15, as a process killed by it."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated(128 + signum)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop the workers now, mid-build: ``shutdown`` alone would wait for the cells they are building."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before Python 3.14
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(5)


def build(
    inputs: RunInputs, cells: tuple[Cell, ...], jobs: int, say: Callable[[str], None]
) -> tuple[tuple[Cell, ...], dict[str, str]]:
    """Build (or reuse) every cell's artifact, ``jobs`` at a time, saying which and how long each took. A quantizer
    that raises on a cell is a result: (the cells built, {cell id: the quantizer's reason} for the others)."""
    store = inputs.open()
    store.fp32("onnx")
    width = len(str(len(cells)))
    failed: dict[str, str] = {}

    def failure(i: int, cell: Cell, exc: Exception) -> None:
        if isinstance(exc, PTQError):  # the user's input or environment (a full cache, say): exit 2
            raise exc
        failed[cell.id] = f"{cell.backend}: {reason_of(exc)}"
        say(f"[{i:{width}}/{len(cells)}] {cell.id} {Evaluated.FAILED_TO_BUILD}: {failed[cell.id]}")

    if jobs <= 1:
        for i, cell in enumerate(cells, 1):
            start = time.perf_counter()
            try:
                store.quantized(cell)
            except Exception as exc:
                failure(i, cell, exc)
                continue
            say(f"[{i:{width}}/{len(cells)}] built {cell.id} ({time.perf_counter() - start:.1f} s)")
    else:
        # spawn, not fork: the parent has onnxruntime's and OpenVINO's thread pools running. The workers die with
        # the parent (SIGKILL, SIGTERM); a SIGTERM, Ctrl-C or an error that ends the run stops them at once.
        pool = ProcessPoolExecutor(
            jobs, mp_context=get_context("spawn"), initializer=_die_with_parent, initargs=(os.getpid(),)
        )
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
        try:
            futures = {pool.submit(_build_in_worker, inputs, cell): cell for cell in cells}
            for i, future in enumerate(as_completed(futures), 1):
                try:
                    cell_id, seconds = future.result()
                except Exception as exc:
                    failure(i, futures[future], exc)
                    continue
                say(f"[{i:{width}}/{len(cells)}] built {cell_id} ({seconds:.1f} s)")
        except BaseException:
            _stop(pool)
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        pool.shutdown()
    return tuple(c for c in cells if c.id not in failed), failed


def score(store: UserStore, cells: tuple[Cell, ...], say: Callable[[str], None]) -> None:
    """Predict every image with the FP32 model and every cell, on every runtime (cached like artifacts)."""
    jobs = [(store.fp32(fmt), f"FP32 {fmt}", rt.name) for fmt in fp32_formats(store) for rt in runtimes_for(fmt)]
    jobs += [(store.quantized(c), c.id, rt.name) for c in cells for rt in runtimes_for(c.backend_spec.format)]
    width = len(str(len(jobs)))
    labels = store.data.labels
    for i, (path, name, rt) in enumerate(jobs, 1):
        start = time.perf_counter()
        try:
            accuracy = (predictions_on_test(store, path, rt, store.model.name) == labels).mean()
        except EvaluationFailed as exc:  # recorded as a result by collect; the other evaluations go on
            say(f"[{i:{width}}/{len(jobs)}] {name} on {rt} {exc.outcome}: {exc.reason}")
            continue
        say(f"[{i:{width}}/{len(jobs)}] scored {name} on {rt}: {accuracy:.2%} ({time.perf_counter() - start:.1f} s)")


def fp32_formats(store: UserStore) -> tuple[str, ...]:
    """The formats the FP32 model is scored in: its ONNX file, and the .pt2 it was exported from if given."""
    return ("onnx", "pt2") if store.pt2 else ("onnx",)


def fp32_agreement(store: UserStore) -> dict[str, float] | None:
    """Of a .pt2 and its ONNX export, the share of images whose FP32 class is the same on torch as on each ONNX
    runtime (None: an ONNX model, or a runtime that failed FP32: reported as such)."""
    if store.pt2 is None:
        return None
    try:
        torch_pred = predictions_on_test(store, store.fp32("pt2"), "torch", store.model.name)
        return {
            f"torch vs {rt.name}": float(
                (predictions_on_test(store, store.fp32("onnx"), rt.name, store.model.name) == torch_pred).mean()
            )
            for rt in runtimes_for("onnx")
        }
    except EvaluationFailed:
        return None


def _stderr(line: str) -> None:
    print(f"ptq run: {line}", file=sys.stderr, flush=True)


def run(
    inputs: RunInputs,
    out: Path,
    max_drop: float = MAX_ACCURACY_DROP_POINTS,
    jobs: int = 1,
    patterns: tuple[str, ...] = (),
    say: Callable[[str], None] = _stderr,
    shard: tuple[int, int] = (1, 1),
    blame: bool = True,
) -> tuple[dict[str, Any], list[Outcome]]:
    """Build, score and check every cell (of ``shard`` K/N: every N-th, from the K-th); blame each dropping
    evaluation's layers (``blame``); write ``out``; return the results and the check outcomes. ``ptq report
    --merge`` joins the N partial reports into the one run's."""
    from ptq_core import blame_report
    from ptq_core.options import max_drop_points
    from ptq_core.results import collect, failed_evaluations

    max_drop = max_drop_points(max_drop)  # the one validator of --max-drop, --ptq-max-drop and max_drop
    if jobs < 1:
        raise PTQError(f"--jobs {jobs}: give a number of parallel builds >= 1")
    out = Path(out)
    check_replaceable(
        out,
        "run",
        keep={
            "--model": inputs.onnx,
            "--data": inputs.data,
            "--calibration": inputs.calibration,
            "--cache": inputs.cache_dir,
        },
    )  # before any work
    store = inputs.open()  # every input is checked here, before anything is built or written
    k, n = shard
    cells = user_cells(store, patterns)[k - 1 :: n]
    if not cells:
        raise PTQError(f"--shard {k}/{n}: the run has fewer cells than shards; give fewer shards")
    say(
        f"{store.model.name}: {len(store.data)} images {store.data.images.shape[1:]} {store.model.input_dtype}, "
        f"{store.model.num_classes} classes; {len(cells)} cells; cache {store.models_dir}"
    )
    cells, failed_builds = build(inputs, cells, jobs, say)
    score(store, cells, say)
    skipped = checks_not_run(store)
    outcomes = list(run_checks(context(store, max_drop), cells, skip=skipped))
    results = collect(store, cells, max_drop, fp32_of=(store.model.name,))
    if blame:
        blame_report.add(store, results, cells, say)
    results["calibration"]["note"] = store.calibration_note
    results["run"] = _settings(store, max_drop, skipped)
    results["failed_builds"] = failed_builds
    results["failed_evaluations"] = failed_evaluations(results)
    if n > 1:
        results["shard"] = {"index": k, "of": n}
    results["checks"] = [
        {**asdict(o), "subject": o.subject.id, "cell": o.subject.cell.id, "runtime": o.subject.runtime}
        for o in outcomes
    ]
    _write(out, results)
    return results, outcomes


def _settings(store: UserStore, max_drop: float, skipped: dict[str, str]) -> dict[str, Any]:
    """What the run was given: its files, the model's input and classes, the drop allowed, the checks not run."""
    return {
        "onnx": str(store.onnx),  # the ONNX export of the .pt2, when one was given
        "pt2": str(store.pt2) if store.pt2 else None,
        "fp32_agreement": fp32_agreement(store),
        "data": str(store.data_file),
        "calibration": str(store.calibration_file) if store.calibration_file else None,
        "input": {"shape": list(store.model.input_shape), "dtype": store.model.input_dtype},
        "num_classes": store.model.num_classes,
        "max_drop_points": max_drop,
        "checks_not_run": skipped,
    }


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    """Failed checks on cells not known to fail."""
    return [o for o in outcomes if not o.passed and not o.expected_failure]


def _write(out: Path, results: dict[str, Any]) -> None:
    """results.json/md, plots and the artifacts (linked from the cache where they share a file system)."""
    from ptq_core import render

    def fill(folder: Path) -> None:
        (folder / ARTIFACTS).mkdir()
        for row in results["cells"]:
            src = Path(row["artifact"])
            try:
                os.link(src, folder / ARTIFACTS / src.name)
            except OSError:
                shutil.copyfile(src, folder / ARTIFACTS / src.name)
            row["artifact"] = f"{ARTIFACTS}/{src.name}"
        render.write(results, folder)

    write_folder(out, "run", fill)


def summary(results: dict[str, Any], outcomes: list[Outcome]) -> list[str]:
    """One line per cell: accuracy on each checked runtime against FP32 there, and its checks; then why each
    dropping one drops."""
    from ptq_core.blame_report import headlines

    fp32 = results["fp32"]["runtimes"]
    lines = [
        "FP32: "
        + ", ".join(f"{rt} {r['accuracy']:.2%}" if scored(r) else f"{rt} {r['outcome']}" for rt, r in fp32.items())
    ]
    agreement = results["run"].get("fp32_agreement")
    if agreement:
        lines.append(
            "FP32 .pt2 and its ONNX export give the same class on "
            + ", ".join(f"{share:.2%} of the images ({pair})" for pair, share in agreement.items())
        )
    by_cell: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_cell.setdefault(o.subject.cell.id, []).append(o)
    for row in results["cells"]:
        mine = by_cell.get(row["cell"], [])
        failed = [o for o in mine if not o.passed]
        broken = sorted(f"{rt} {e['outcome']}" for rt, e in row["runtimes"].items() if failed_entry(e))
        unexpected = sorted({o.check.removeprefix("check_") for o in failed if not o.expected_failure})
        if broken or unexpected:
            verdict = "FAIL: " + ", ".join(broken + unexpected)
        elif failed:
            verdict = "known failure (see results.md)"
        else:
            verdict = "ok (passes a check known to fail on the suite's models)" if row["expected_failure"] else "ok"
        accs = "  ".join(
            f"{rt} {r['accuracy']:.2%} {r['delta_points']:+.2f}" if scored(r) else f"{rt} {r['outcome'].upper()}"
            for rt, r in row["runtimes"].items()
            if r["checked"] or not scored(r)
        )
        lines.append(f"{row['cell']:60} {accs}  {len(mine) - len(failed)}/{len(mine)} checks  {verdict}")
    return lines + headlines(results)
