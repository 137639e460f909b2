"""CPU inference speed of ResNet8: FP32 against each dtype's default cell, on the real test images.

Every test here uses pytest-benchmark's ``benchmark`` fixture, so the default run skips them
(``--benchmark-skip`` in pytest.ini) and ``tox -e bench`` runs them all
(``pytest -m benchmark --benchmark-only --benchmark-autosave``; benchmarks cannot run under xdist).

* ``test_onnxruntime`` / ``test_pytorch`` time one model each, grouped by framework and batch size
  (1: latency, 256: throughput). ONNX Runtime sessions use the thread count in the test id; PyTorch uses
  every core. The 8-bit PyTorch model is compiled with Inductor freezing (real oneDNN int8 kernels), once,
  outside the timed region; ``extra_info`` records the compile seconds.
* ``test_target_*`` measure FP32 and 8-bit interleaved in the same test (medians over rounds) and assert
  the speed-ups of the issue; a target this machine cannot reach is xfail(strict) with the measured ratio.
  ONNX Runtime targets run on 1 thread: on a 2-core machine shared with another process, 2-thread ratios
  swing with the other process's load (u8s8/FP32 at batch 1 measured 1.26x to 1.76x), 1-thread ones do not.

At the end of the module a table prints images/s, the achieved MAC rate and each model's ratio to FP32.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptq_core.adapters import onnxruntime_session
from ptq_core.backends import BACKENDS
from ptq_core.inductor import SIGNED_ACTIVATIONS_ERROR, compile_for, inductor
from ptq_core.matrix import Cell
from ptq_core.models import get_model
from ptq_core.speed import PairedTimer, count_macs, float_images

pytestmark = pytest.mark.benchmark

BATCHES = (1, 256)
CORES = os.cpu_count() or 1
THREADS = tuple(sorted({1, CORES}))
ORT_MODELS = tuple(sorted(("fp32", *BACKENDS["onnxruntime"].dtypes)))  # fp32, int8 (S8S8), u8s8, uint8 (U8U8)
TORCH_MODELS = tuple(sorted(("fp32-eager", "fp32-compiled", *(f"{d}-compiled" for d in BACKENDS["pytorch"].dtypes))))
ROUNDS = 9  # interleaved rounds per target test; each model runs ~0.1 s per round
TARGET_THREADS = 1  # ONNX Runtime targets (see the module docstring)

# The targets: the 8-bit model's speed-up over FP32, measured in the same test.
ORT_U8S8_TARGET = {1: 1.5, 256: 2.5}
TORCH_UINT8_TARGET = 1.5  # compiled uint8 over FP32 eager, batch 256
# Targets this machine does not reach (AMD EPYC, 2 cores, AVX-512 VNNI; onnxruntime 1.32). Per-node profile
# at batch 256, 1 thread: the 3-channel input conv is 2.2x slower in int8 (6.3 vs 2.9 ms) and the 16-channel
# convs only 1.9x faster, while the 32/64-channel convs are 3.2-3.6x faster: 2.05x for the whole model.
ORT_TARGET_XFAIL = {
    256: "measured 2.05x FP32 (8.6 k vs 4.2 k images/s, 1 thread; 1.7-2.2x on 2 threads); no ORT "
    "format, optimisation level or session option does better (docs/benchmarks.md, ONNX Runtime alone)",
}


def _param(*parts: object) -> str:
    return "-".join(str(p) for p in parts)


# ---------------------------------------------------------------------------------------------- fixtures


@dataclass
class Report:
    """Rows printed as one table when the module ends: the pytest-benchmark table has no images/s."""

    macs: int
    rows: dict[str, list[tuple[str, float | None, str]]] = field(default_factory=dict)  # group -> rows
    notes: list[str] = field(default_factory=list)

    def add(self, group: str, name: str, images_per_s: float | None, note: str = "") -> None:
        self.rows.setdefault(group, []).append((name, images_per_s, note))

    def lines(self) -> Iterator[str]:
        for group in sorted(self.rows, key=lambda g: (g.split()[0], int(g.rsplit(" b", 1)[1]))):
            rows = sorted(self.rows[group], key=lambda r: -(r[1] or 0.0))
            # FP32 (eager for PyTorch) at the same thread count is each row's baseline
            fp32 = {
                name.rsplit("-", 1)[1]: rate
                for name, rate, _ in rows
                if rate and "-fp32-" in name and "compiled" not in name
            }
            yield f"{group}"
            for name, rate, note in rows:
                if rate is None:
                    yield f"  {name:34s} {'-':>10s}  {note}"
                    continue
                base = fp32.get(name.rsplit("-", 1)[1])
                ratio = f"{rate / base:5.2f}x {'FP32 eager' if 'pytorch' in name else 'FP32'}" if base else ""
                yield (
                    f"  {name:34s} {rate:10,.0f} images/s  {rate * self.macs / 1e9:6.1f} GMAC/s  {ratio:16s} {note}"
                ).rstrip()
            fastest = next((name for name, rate, _ in rows if rate and "-fp32-" not in name), None)
            if fastest:
                yield f"  fastest 8-bit: {fastest}"
        yield from self.notes


@pytest.fixture(scope="module")
def macs(fp32_pt2: Path) -> int:
    from ptq_core.formats.pt2 import load

    return count_macs(load(fp32_pt2).module(), get_model("resnet8").input_shape)


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest, macs: int) -> Iterator[Report]:
    rep = Report(macs)
    yield rep
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or not (rep.rows or rep.notes):
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        terminal.ensure_newline()
        terminal.write_sep("-", f"ResNet8 inference speed: {macs:,} MACs per image, medians")
        terminal.write_line(
            "(x FP32 in a group compares separate benchmarks; the target lines time FP32 and "
            "8-bit interleaved in one test)"
        )
        for line in rep.lines():
            terminal.write_line(line)


@pytest.fixture(scope="module")
def images(test_split) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The first 256 real test images, float32 NHWC (converted outside every timed region)."""
    return float_images(test_split.images[: max(BATCHES)])


@pytest.fixture(scope="module")
def session(fp32_onnx: Path, quantized) -> Callable[[str, int], Any]:  # type: ignore[no-untyped-def]
    """``session(model, threads)``: one ONNX Runtime session per model and thread count (default cells)."""

    @functools.cache
    def make(model: str, threads: int) -> Any:
        path = fp32_onnx if model == "fp32" else quantized(Cell("onnxruntime", model))
        return onnxruntime_session(path, threads)

    return make


@dataclass
class TorchModel:
    run: Callable[[Any], Any]  # images tensor -> probabilities, under no_grad
    compile_s: dict[int, float] = field(default_factory=dict)  # batch -> seconds of its compile
    error: str | None = None


@pytest.fixture(scope="module")
def torch_threads() -> Iterator[int]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(CORES)
    yield CORES
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def torch_model(fp32_pt2: Path, quantized, torch_threads: int):  # type: ignore[no-untyped-def]
    """``torch_model(name, x)``: the model ready for ``x``'s batch size; compiled variants are compiled for
    it here, once; a model that cannot be compiled is skipped with the error torch raised."""
    import torch

    from ptq_core.formats import pt2

    @functools.cache
    def load(name: str) -> TorchModel:
        dtype, mode = name.split("-")
        path = fp32_pt2 if dtype == "fp32" else quantized(Cell("pytorch", dtype))
        fn = inductor(path) if mode == "compiled" else pt2.load(path).module()

        def run(x: Any) -> Any:
            with torch.no_grad():
                return fn(x)

        return TorchModel(run)

    def get(name: str, x: Any) -> TorchModel:
        model = load(name)
        if model.error is None and name.endswith("compiled") and len(x) not in model.compile_s:
            try:
                model.compile_s[len(x)] = compile_for(model.run, x)
            except Exception as exc:
                if SIGNED_ACTIVATIONS_ERROR not in str(exc):
                    raise
                model.error = (
                    f"Inductor cannot lower the PT2E {name.split('-')[0]} cell (signed 8-bit "
                    f"activations) to x86 int8 kernels: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0]} (torch {torch.__version__})"
                )
        if model.error:
            pytest.skip(model.error)
        return model

    return get


def _rate(benchmark, batch: int) -> float | None:  # type: ignore[no-untyped-def]
    stats = getattr(benchmark, "stats", None)
    return batch / stats.stats.median if stats is not None else None  # None under --benchmark-disable


def _record(
    benchmark,
    report: Report,
    group: str,
    name: str,
    batch: int,
    threads: int,  # type: ignore[no-untyped-def]
    macs: int,
    **extra: object,
) -> None:
    rate = _rate(benchmark, batch)
    benchmark.extra_info.update(batch=batch, threads=threads, macs_per_image=macs, **extra)
    if rate is not None:
        benchmark.extra_info.update(images_per_s=round(rate, 1), mac_per_s=round(rate * macs))
    compile_s = extra.get("compile_s")
    report.add(group, name, rate, f"compiled in {compile_s:.1f} s" if compile_s is not None else "")


# ---------------------------------------------------------------------------------------------- benchmarks


@pytest.mark.parametrize(
    ("model", "batch", "threads"),
    [
        pytest.param(m, b, t, id=_param("onnxruntime", m, f"b{b}", f"t{t}"))
        for m in ORT_MODELS
        for b in BATCHES
        for t in THREADS
    ],
)
def test_onnxruntime(
    benchmark,
    session,
    images,
    report,
    macs,  # type: ignore[no-untyped-def]
    model: str,
    batch: int,
    threads: int,
) -> None:
    import onnxruntime as ort

    sess = session(model, threads)
    feed = {sess.get_inputs()[0].name: images[:batch]}
    sess.run(None, feed)  # warm-up: the first run allocates the arena
    benchmark.group = f"onnxruntime b{batch}"
    out = benchmark(sess.run, None, feed)
    assert out[0].shape == (batch, 10)
    _record(
        benchmark,
        report,
        benchmark.group,
        _param("onnxruntime", model, f"b{batch}", f"t{threads}"),
        batch,
        threads,
        macs,
        model=model,
        runtime="onnxruntime",
        onnxruntime=ort.__version__,
    )


@pytest.mark.parametrize(
    ("model", "batch"),
    [pytest.param(m, b, id=_param("pytorch", m, f"b{b}", f"t{CORES}")) for m in TORCH_MODELS for b in BATCHES],
)
def test_pytorch(
    benchmark,
    torch_model,
    images,
    report,
    macs,  # type: ignore[no-untyped-def]
    model: str,
    batch: int,
) -> None:
    import torch

    x = torch.from_numpy(images[:batch])
    group = f"pytorch b{batch}"
    name = _param("pytorch", model, f"b{batch}", f"t{CORES}")
    try:
        m = torch_model(model, x)
    except pytest.skip.Exception as skip:
        report.add(group, name, None, f"skipped: {skip.msg}")
        raise
    m.run(x)  # warm-up (compiled models are already compiled for this batch)
    benchmark.group = group
    out = benchmark(m.run, x)
    assert tuple(out.shape) == (batch, 10)
    _record(
        benchmark,
        report,
        group,
        name,
        batch,
        CORES,
        macs,
        model=model,
        runtime="torch",
        torch=torch.__version__,
        **({"compile_s": round(m.compile_s[batch], 2)} if batch in m.compile_s else {}),
    )


# ---------------------------------------------------------------------------------------------- targets


def _ort_target_param(batch: int):  # type: ignore[no-untyped-def]
    reason = ORT_TARGET_XFAIL.get(batch)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(batch, id=_param("onnxruntime", "u8s8", f"b{batch}", f"t{TARGET_THREADS}"), marks=marks)


@pytest.mark.parametrize("batch", [_ort_target_param(b) for b in BATCHES])
def test_target_onnxruntime(benchmark, session, images, report, batch: int) -> None:  # type: ignore[no-untyped-def]
    """u8s8 (the default per-channel cell) >= the issue's multiple of FP32, and every dtype ranked."""
    target, threads = ORT_U8S8_TARGET[batch], TARGET_THREADS
    x = images[:batch]
    sessions = {m: session(m, threads) for m in ORT_MODELS}
    timer = PairedTimer({m: functools.partial(s.run, None, {s.get_inputs()[0].name: x}) for m, s in sessions.items()})
    benchmark.group = "targets (one round: every model interleaved)"
    out = benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    assert all(o[0].shape == (batch, 10) for o in out.values())

    speedups = {m: timer.speedup(m, over="fp32") for m in ORT_MODELS}
    ranking = sorted(ORT_MODELS, key=lambda m: -speedups[m])
    benchmark.extra_info.update(
        batch=batch,
        threads=threads,
        target=target,
        images_per_s={m: round(batch / timer.median_seconds(m), 1) for m in ORT_MODELS},
        speedup_over_fp32={m: round(v, 3) for m, v in speedups.items()},
        fastest=ranking[0],
    )
    ratio = speedups["u8s8"]
    report.notes.append(
        f"target onnxruntime u8s8 b{batch} t{threads}: {ratio:.2f}x FP32 (target >= {target}x: "
        f"{'met' if ratio >= target else 'NOT met'}); fastest first: "
        + ", ".join(f"{m} {speedups[m]:.2f}x" for m in ranking)
    )
    assert ratio >= target, (
        f"u8s8 ran {ratio:.2f}x FP32 at batch {batch}, {threads} thread(s) "
        f"({batch / timer.median_seconds('u8s8'):,.0f} vs "
        f"{batch / timer.median_seconds('fp32'):,.0f} images/s); target {target}x"
    )


@pytest.mark.parametrize(
    "batch", [pytest.param(max(BATCHES), id=_param("pytorch", "uint8-compiled", f"b{max(BATCHES)}", f"t{CORES}"))]
)
def test_target_pytorch(benchmark, torch_model, images, report, batch: int) -> None:  # type: ignore[no-untyped-def]
    """The uint8 cell compiled >= 1.5x FP32 eager at batch 256, and reported against FP32 compiled."""
    import torch

    x = torch.from_numpy(images[:batch])
    names = ("fp32-eager", "fp32-compiled", "uint8-compiled")
    models = {n: torch_model(n, x) for n in names}
    timer = PairedTimer({n: functools.partial(m.run, x) for n, m in models.items()})
    benchmark.group = "targets (one round: every model interleaved)"
    out = benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    assert all(tuple(o.shape) == (batch, 10) for o in out.values())
    # the compiled 8-bit model still computes the cell: top-1 as the eager (q/dq simulated in float) model
    eager = torch_model("uint8-eager", x).run(x)
    agreement = float((eager.argmax(1) == out["uint8-compiled"].argmax(1)).float().mean())
    assert agreement >= 0.99, f"compiled uint8 agrees with the eager cell on {agreement:.1%} of top-1 only"

    over_eager = timer.speedup("uint8-compiled", over="fp32-eager")
    over_compiled = timer.speedup("uint8-compiled", over="fp32-compiled")
    benchmark.extra_info.update(
        batch=batch,
        threads=CORES,
        target=TORCH_UINT8_TARGET,
        images_per_s={n: round(batch / timer.median_seconds(n), 1) for n in names},
        uint8_over_fp32_eager=round(over_eager, 3),
        uint8_over_fp32_compiled=round(over_compiled, 3),
        compile_s={n: round(m.compile_s[batch], 2) for n, m in models.items() if batch in m.compile_s},
    )
    report.notes.append(
        f"target pytorch uint8 compiled b{batch} t{CORES}: {over_eager:.2f}x FP32 eager (target >= "
        f"{TORCH_UINT8_TARGET}x: {'met' if over_eager >= TORCH_UINT8_TARGET else 'NOT met'}), "
        f"{over_compiled:.2f}x FP32 compiled"
    )
    assert over_eager >= TORCH_UINT8_TARGET, (
        f"compiled uint8 ran {over_eager:.2f}x FP32 eager (target {TORCH_UINT8_TARGET}x)"
    )


# ------------------------------------------------------------------------------ deployment goals (issue: 3.0x, 1.5x)

# The fastest 8-bit deployment within the accuracy drop, over ORT FP32 in the same interleaved rounds
# (ptq_core/bench.py; `ptq bench` prints the whole table). Unmet goals carry the figure measured here
# (AMD EPYC Zen 5, 2 cores; onnxruntime 1.32, openvino 2026.4; `ptq bench --ort-attempts`).
DEPLOY_GOALS = {(256, 1): 3.0, (256, 2): 3.0, (1, 1): 1.5, (1, 2): 1.5}
# On 2 threads the figure straddles the goal from run to run, so these are xfail but not strict: a pass is
# not news and a failure is not either; the ranges are what four `ptq bench` runs measured.
DEPLOY_STRADDLES = {
    (256, 2): "measured 2.83-3.32x over eleven runs (NNCF's cell on OpenVINO; throughput hint 2.80-3.01x)",
}
DEPLOY_XFAIL: dict[Any, str] = {}
ORT_GOAL = 2.5  # ONNX Runtime alone, batch 256
ORT_XFAIL = {
    1: "measured 1.90-2.02x (u8s8 and NNCF cells), 2.01-2.06x with uint8 input, 1.96-2.03x QOperator; "
    "QLinearConv is 95 % of the time at ~32 % of the int8 peak (ptq bench --ort-attempts)",
    2: "measured 1.31-1.65x; with spinning threads 1.94-2.22x, but against FP32 spinning, itself slower at batch 256 "
    "on 2 cores (ptq bench --ort-attempts)",
}


@pytest.fixture(scope="module")
def deployments_scored(ws):  # type: ignore[no-untyped-def]
    from ptq_core import bench

    deps = bench.deployments(ws)
    return deps, bench.scores(ws, deps), bench.macs_of(ws)


def _goal_param(batch: int, threads: int, reasons: dict[Any, str], key: Any):  # type: ignore[no-untyped-def]
    marks = [pytest.mark.xfail(reason=reasons[key], strict=True)] if key in reasons else []
    if reasons is DEPLOY_XFAIL and key in DEPLOY_STRADDLES:
        marks = [pytest.mark.xfail(reason=DEPLOY_STRADDLES[key], strict=False)]
    return pytest.param(batch, threads, id=f"b{batch}-t{threads}", marks=marks)


def _timed_rows(benchmark, deployments_scored, ws, batch: int, threads: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    from ptq_core import bench

    deps, scored, macs = deployments_scored
    timer = bench.group_timer(deps, ws.split("test").images, batch, threads)
    benchmark.group = "deployment goals (one round: every deployment interleaved)"
    benchmark.pedantic(timer.round, rounds=ROUNDS, iterations=1)
    rows = bench.group_rows(timer, deps, batch, threads, macs, scored)
    benchmark.extra_info.update(rows=rows)
    return rows


@pytest.mark.parametrize(("batch", "threads"), [_goal_param(b, t, DEPLOY_XFAIL, (b, t)) for b, t in DEPLOY_GOALS])
def test_goal_fastest_honest_8bit_deployment(benchmark, deployments_scored, ws, batch: int, threads: int) -> None:  # type: ignore[no-untyped-def]
    from ptq_core import bench

    rows = _timed_rows(benchmark, deployments_scored, ws, batch, threads)
    best = bench.fastest(rows)[f"b{batch}-t{threads}"]
    goal = DEPLOY_GOALS[(batch, threads)]
    assert best["vs_ort_fp32"] >= goal, (
        f"fastest honest 8-bit deployment at batch {batch}, {threads} thread(s): {best['model']} on "
        f"{best['runtime']}, {best['vs_ort_fp32']:.2f}x ORT FP32 (goal {goal}x)"
    )


@pytest.mark.parametrize(("batch", "threads"), [_goal_param(256, t, ORT_XFAIL, t) for t in (1, 2)])
def test_goal_onnxruntime_alone(benchmark, deployments_scored, ws, batch: int, threads: int) -> None:  # type: ignore[no-untyped-def]
    rows = _timed_rows(benchmark, deployments_scored, ws, batch, threads)
    best = max((r for r in rows if r["honest"] and r["runtime"] == "onnxruntime"), key=lambda r: r["vs_ort_fp32"])
    assert best["vs_ort_fp32"] >= ORT_GOAL, f"ONNX Runtime's best 8-bit cell: {best['vs_ort_fp32']:.2f}x (goal 2.5x)"
