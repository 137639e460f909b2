"""A runtime's failure on one evaluation is a result: every tool records it with the library's reason and goes on.

A fault-injecting runtime, registered for one test only, runs ONNX files through ONNX Runtime but refuses to
compile the artifacts named in ``refuse`` (as OpenVINO's bf16 plugin refuses ResNet8's S8S8 cells on an AMX
CPU), raises on the second batch of those in ``raise_in``, and answers NaN for every third image of those in
``nan_in`` (the first image's scores for the others: a failure is not worth scoring the split for).
``ptq report``, ``ptq run``, the pytest plugin, ``ptq tune`` and ``ptq bench`` each complete, mark those
evaluations with their outcome and reason, score every other one, and exit 1.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq_core import blame_report, cli, report, speed
from ptq_core.checks import MAX_ACCURACY_DROP_POINTS
from ptq_core.evaluation import EvaluationFailed, Outcome, reason_of
from ptq_core.known_failures import EVALUATION, KNOWN_FAILURES, known_failure
from ptq_core.matrix import CELLS, Cell
from ptq_core.runtimes import RUNTIMES, Runtime, as_predictor
from tests.onnx_models import make_model

FAULTY = "fault_injection"
# the shape of OpenVINO's error on the AMX Xeon: a stack of source locations, then the cause
REFUSAL = (
    "Exception from src/inference/src/cpp/core.cpp:132:\nException from src/plugins/fake/plugin.cpp:59:\n"
    "Check '!implementations.empty()' failed at src/plugins/fake/executor_factory.hpp:103:\n[FAULT] no kernel for it"
)


def faulty_runtime(refuse: tuple[str, ...] = (), raise_in: tuple[str, ...] = (), nan_in: tuple[str, ...] = ()):
    base = RUNTIMES["onnxruntime"]

    def named(path: Path, parts: tuple[str, ...]) -> bool:
        return any(part in path.name for part in parts)

    def load(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
        if named(path, refuse):
            raise RuntimeError(REFUSAL)
        predict, batches = base.load(path, threads), itertools.count()

        def run(images: np.ndarray) -> np.ndarray:
            if named(path, raise_in) and next(batches) >= 1:
                raise RuntimeError("[FAULT] out of scratch memory on the second batch")
            if not named(path, nan_in):
                return predict(images)
            scores = np.repeat(predict(images[:1]), len(images), axis=0)  # what is scored here is not the point
            scores[::3] = np.nan
            return scores

        return run

    return Runtime(FAULTY, "onnx", ("onnxruntime",), load)


@pytest.fixture
def inject(monkeypatch):
    def register(**faults: tuple[str, ...]) -> None:
        monkeypatch.setitem(RUNTIMES, FAULTY, faulty_runtime(**faults))

    return register


def test_the_reason_is_the_line_that_names_the_cause() -> None:
    ort = RuntimeError(
        "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
        "model.cc:181 onnxruntime::Model::Model(onnx::ModelProto&&, const PathString&, const logging::Logger&) "
        "Unsupported model IR version: 14, max supported IR version: 13\n"
    )
    assert reason_of(ort) == (
        "RuntimeError: [ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed: Unsupported model IR "
        "version: 14, max supported IR version: 13"
    )
    assert reason_of(RuntimeError(REFUSAL)) == (
        "RuntimeError: Check '!implementations.empty()' failed [FAULT] no kernel for it"
    )
    long = ValueError("x" * 1000)
    assert len(reason_of(long)) == 400 and reason_of(long).endswith("...")


def test_each_fault_is_its_own_outcome_with_the_runtime_reason(inject, fp32_onnx, test_split) -> None:
    from ptq_core.eval import predict_scores

    images = test_split.images[:130]
    inject(refuse=(fp32_onnx.name,))
    with pytest.raises(EvaluationFailed) as refused:
        predict_scores(fp32_onnx, images, runtime=FAULTY)
    assert refused.value.outcome is Outcome.FAILED_TO_LOAD
    assert "fault_injection: RuntimeError: Check '!implementations.empty()' failed" in refused.value.reason
    inject(raise_in=(fp32_onnx.name,))
    with pytest.raises(EvaluationFailed) as raised:
        predict_scores(fp32_onnx, images, runtime=FAULTY)
    assert raised.value.outcome is Outcome.FAILED_WHILE_SCORING
    assert raised.value.reason == "on images 64-127: RuntimeError: [FAULT] out of scratch memory on the second batch"
    inject(nan_in=(fp32_onnx.name,))
    with pytest.raises(EvaluationFailed, match="45 of 130 images got non-finite scores") as nan:
        predict_scores(fp32_onnx, images, runtime=FAULTY)
    assert nan.value.outcome is Outcome.FAILED_WHILE_SCORING
    inject()  # no fault: the same model scores
    assert np.isfinite(predict_scores(fp32_onnx, images, runtime=FAULTY)).all()


REPORT_CELLS = (Cell("onnxruntime", "u8s8"), Cell("onnxruntime", "int8"), Cell("nncf"))


def real_outcome(cell: Cell, runtime: str, users: bool = False) -> str:
    """What a real runtime gives ``cell`` (or a user's model in its configuration) on this CPU: scored, unless the
    CPU's measured failure applies (OpenVINO's bf16 plugin cannot compile S8S8 cells on AMX): on the suite's
    models a known failure, on a user's a failure to load."""
    if not known_failure(cell, EVALUATION, runtime):
        return str(Outcome.SCORED)
    return str(Outcome.FAILED_TO_LOAD if users else Outcome.KNOWN_FAILURE)


@pytest.mark.slow
def test_ptq_report_marks_the_failed_evaluations_and_scores_the_rest(inject, ws, tmp_path, monkeypatch, capsys) -> None:
    u8s8, int8, nncf = REPORT_CELLS
    inject(refuse=(int8.id,), nan_in=(nncf.id,))
    monkeypatch.setattr(report, "build", _report_of(report.build, REPORT_CELLS))
    # the blame of a dropping cell is tests/test_blame_report.py's (u8s8 drops 2.74 points on the AVX2-only CPU);
    # --no-blame leaves it out on every CPU: nothing is blamed, nothing is said of it
    monkeypatch.setattr(blame_report, "add", lambda *_: pytest.fail("ptq report --no-blame blamed"))
    argv = ["report", "--no-blame", "--out", str(tmp_path / "report"), "--models-dir", str(ws.models_dir)]
    status = cli.main(argv)
    assert status == 1
    printed = capsys.readouterr().out
    assert "in float regains" not in printed and "blame" not in (tmp_path / "report" / "results.md").read_text()
    assert f"FAILED evaluation {int8.id} on {FAULTY}: failed to load: {FAULTY}: RuntimeError: Check" in printed
    assert f"FAILED evaluation {nncf.id} on {FAULTY}: failed while scoring: 3438 of 10000 images" in printed
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    on = {row["cell"]: row["runtimes"] for row in results["cells"]}
    assert on[int8.id][FAULTY]["outcome"] == "failed to load" and "accuracy" not in on[int8.id][FAULTY]
    assert "src/plugins" not in on[int8.id][FAULTY]["reason"]  # the cause, not the stack of locations
    assert on[nncf.id][FAULTY]["outcome"] == "failed while scoring"
    assert on[u8s8.id][FAULTY]["outcome"] == "scored"
    assert on[u8s8.id][FAULTY]["accuracy"] == on[u8s8.id]["onnxruntime"]["accuracy"]  # ONNX Runtime underneath
    for cell, runtimes in on.items():  # every other runtime did what it does without the faulty one
        cell_of = next(c for c in REPORT_CELLS if c.id == cell)
        assert {rt: e["outcome"] for rt, e in runtimes.items() if rt != FAULTY} == {
            rt: real_outcome(cell_of, rt) for rt in runtimes if rt != FAULTY
        }, cell
    rows = {row["cell"]: row for row in results["cells"]}
    assert not rows[int8.id]["passes"] and rows[u8s8.id]["passes"]
    text = (tmp_path / "report" / "results.md").read_text()
    assert "**2 evaluations failed**" in text and f"{FAULTY} **failed to load**" in text


def _report_of(build, cells):
    return lambda ws, studies=True, benchmarks=None, **options: build(
        ws, studies=False, cells=cells, archive=False, **options
    )


def tiny_classifier(path: Path) -> Path:
    """(N, 3, 16, 16) -> (N, 3) logits: a 1x1 conv, the mean over the image and a dense layer; an image whose
    channel k is the brightest is class k."""
    rng = np.random.default_rng(0)
    conv = (np.eye(3) * 2 + rng.normal(0, 0.05, (3, 3))).astype(np.float32).reshape(3, 3, 1, 1)
    dense = (np.eye(3) + rng.normal(0, 0.05, (3, 3))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "d", "b"], ["logits"]),
        ],
        "tiny_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(conv, "w"),
            numpy_helper.from_array(dense, "d"),
            numpy_helper.from_array(np.zeros(3, np.float32), "b"),
        ],
    )
    import onnx

    onnx.save(make_model(graph), str(path))
    return path


def tiny_data(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 3
    images = rng.random((n, 3, 16, 16), dtype=np.float32) * 0.5
    images[np.arange(n), labels] += 0.5
    np.savez(path, images=images, labels=labels)
    return path


USER_CELLS = ("onnxruntime-u8s8-minmax-per_channel", "onnxruntime-int8-minmax-per_channel")


@pytest.fixture
def user_model(tmp_path: Path, ws) -> dict[str, Path]:
    """The tiny classifier and its data, with a cache kept across runs (keyed like every artifact: a failed
    evaluation is never cached, so each run meets the injected faults anew)."""
    return {
        "onnx": tiny_classifier(tmp_path / "tiny.onnx"),
        "data": tiny_data(tmp_path / "data.npz"),
        "cache": ws.models_dir / "fault-injection",
    }


def test_ptq_run_writes_the_whole_report_with_the_failed_evaluations_marked(
    inject, user_model, tmp_path, capsys
) -> None:
    inject(refuse=("int8-minmax",), raise_in=("u8s8-minmax",))
    out = tmp_path / "report"
    args = ["run", "--onnx", user_model["onnx"], "--data", user_model["data"], "--samples", "60", "--out", out,
            "--cache", user_model["cache"], "--cells", *USER_CELLS]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 1
    printed = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    on = {row["cell"].removeprefix("tiny-"): row["runtimes"] for row in results["cells"]}
    assert on["onnxruntime-int8-minmax-per_channel"][FAULTY]["outcome"] == "failed to load"
    assert on["onnxruntime-u8s8-minmax-per_channel"][FAULTY]["outcome"] == "failed while scoring"
    assert "second batch" in on["onnxruntime-u8s8-minmax-per_channel"][FAULTY]["reason"]
    assert results["models"]["tiny"]["runtimes"][FAULTY]["outcome"] == "scored"  # FP32 is not refused
    real_failures = 0
    for cell, runtimes in on.items():  # every other runtime did what it does without the faulty one
        suites = next(c for c in CELLS if c.id == f"resnet8-{cell}")
        outcomes = {rt: real_outcome(suites, rt, users=True) for rt in runtimes if rt != FAULTY}
        assert {rt: e["outcome"] for rt, e in runtimes.items() if rt != FAULTY} == outcomes, cell
        real_failures += sum(o != "scored" for o in outcomes.values())
    assert len(results["failed_evaluations"]) == 2 + real_failures
    assert f"tiny-onnxruntime-int8-minmax-per_channel on {FAULTY}: failed to load" in printed.out
    assert f"{FAULTY} FAILED TO LOAD" in printed.out  # the summary line of the cell
    checks = {(c["cell"], c["runtime"], c["check"]): c for c in results["checks"]}
    refused = checks[("tiny-onnxruntime-int8-minmax-per_channel", FAULTY, "check_accuracy_vs_fp32")]
    assert not refused["passed"] and "failed to load" in refused["message"]
    assert checks[("tiny-onnxruntime-int8-minmax-per_channel", "onnxruntime", "check_accuracy_vs_fp32")]["passed"]
    assert "Traceback" not in printed.err


def test_the_pytest_plugin_fails_the_evaluations_a_runtime_failed_and_runs_the_rest(
    inject, user_model, tmp_path, monkeypatch, capsys
) -> None:
    inject(nan_in=("int8-minmax",))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTEST_ADDOPTS", "")
    # --assert=plain: the inner session in this process would rewrite ptq_core, already imported (a warning,
    # an error under the suite's filterwarnings; seen under tox -e min and upgrade-onnxruntime)
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--assert=plain",
            "--ptq-onnx", str(user_model["onnx"]),
            "--ptq-data", str(user_model["data"]), "--ptq-cache", str(user_model["cache"]),
            "--ptq-cells", USER_CELLS[1]]  # fmt: skip
    status = pytest.main(args)
    text = capsys.readouterr().out
    assert status == 1, text
    failed = [line for line in text.splitlines() if line.startswith("FAILED")]
    assert sum(f"-on-{FAULTY}]" in line for line in failed) == 3, text  # outputs, accuracy and classes, on its scores
    assert not [line for line in failed if "-on-onnxruntime]" in line or "-on-openvino]" in line], text
    assert "images got non-finite scores (NaN or inf)" in text
    assert " passed" in text


def test_known_failures_match_only_what_they_were_measured_on() -> None:
    amx = next(k for k in KNOWN_FAILURES if EVALUATION in k.checks)
    int8 = Cell("onnxruntime", "int8")
    assert (known_failure(int8, EVALUATION, "openvino_default", cpu="amx") is not None) == amx.libraries()
    assert known_failure(int8, EVALUATION, "openvino_default", cpu="avx512vnni") is None  # another CPU
    assert known_failure(int8, EVALUATION, "openvino", cpu="amx") is None  # the f32 hint compiles it
    assert known_failure(Cell("onnxruntime", "u8s8"), EVALUATION, "openvino_default", cpu="amx") is None
    mobilenet = Cell("onnxruntime", "int8", model="mobilenetv1")
    assert known_failure(mobilenet, EVALUATION, "openvino_default", cpu="amx") is None
    for known in KNOWN_FAILURES:  # none reaches a user's model, whatever its configuration
        for cell in CELLS:
            if cell.model in known.models and known.applies(cell):
                users = SimpleNamespace(**{**cell.__dict__, "model": f"{cell.model}_user"})
                for check in known.checks:
                    for cpu in ("amx", "avx512vnni"):
                        assert not known.matches(users, check, (known.runtimes or ("onnxruntime",))[0], cpu)


ONNX_CELLS = [c for c in CELLS if c.backend_spec.format == "onnx"]


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=known, strict=True, raises=EvaluationFailed)])
        if (known := known_failure(c, EVALUATION, "openvino_default"))
        else pytest.param(c, id=c.id)
        for c in ONNX_CELLS
    ],
)
def test_every_onnx_cell_compiles_on_openvino_at_its_default_precision(cell: Cell, ws, quantized, test_split) -> None:
    """What a user gets from OpenVINO without a precision hint (bf16 where the CPU has it), as the report scores
    every cell there; a measured failure is a strict xfail on the CPU and release it was measured on. A compile
    that worked is remembered under the artifact's digest, the release and the CPU (a failed one never is)."""
    from ptq_core import cache, sources
    from ptq_core.machine import cpu_capability

    artifact = quantized(cell)

    def compile_and_answer(tmp: Path) -> None:
        scores = as_predictor(artifact, cell.model_spec, "openvino_default")(test_split.images[:2])
        assert scores.shape == (2, cell.model_spec.num_classes)
        tmp.write_text(str(scores.shape))

    key = {
        "model_sha256": sources.file_digest(artifact),
        "versions": cache.library_versions(("openvino",)),
        "cpu": cpu_capability(),
    }
    cache.build_once(ws.models_dir / "compiles" / f"{artifact.name}.openvino_default", key, compile_and_answer)


class FirstImages:
    """The workspace with a test split of its first ``n`` images: what a tool's bookkeeping needs, at a fraction of
    the scoring time."""

    def __init__(self, ws, n: int) -> None:
        self._ws, self._n = ws, n

    def split(self, name: str):
        from ptq_core.cifar10 import Split

        whole = self._ws.split(name)
        return Split(whole.name, whole.images[: self._n], whole.labels[: self._n])

    def __getattr__(self, name: str):
        return getattr(self._ws, name)


@pytest.mark.slow
def test_ptq_bench_times_every_deployment_that_runs_and_marks_the_rest(inject, ws, monkeypatch) -> None:
    from ptq_core import bench, bench_report
    from ptq_core.bench import Deployment

    u8s8, int8, _ = REPORT_CELLS
    inject(refuse=(int8.id,), nan_in=(u8s8.id,))
    spec = u8s8.model_spec
    deps = [
        Deployment("onnxruntime", "fp32", ws.fp32("onnx"), spec),
        Deployment("openvino_default", "fp32", ws.fp32("onnx"), spec),
        Deployment("onnxruntime", u8s8.id, ws.quantized(u8s8), spec),
        Deployment(FAULTY, int8.id, ws.quantized(int8), spec),
        Deployment(FAULTY, u8s8.id, ws.quantized(u8s8), spec),
    ]
    monkeypatch.setattr(bench, "deployments", lambda ws, model: deps)
    monkeypatch.setattr(bench, "macs_of", lambda ws, model: 12_500_000)  # ResNet8's; counting it builds torch's
    monkeypatch.setattr(speed, "SEGMENT_S", 0.01)
    measured = bench.measure(FirstImages(ws, 256), batches=(64,), threads=(1,), rounds=2, say=lambda line: None)
    rows = {(r["runtime"], r["model"]): r for r in measured["rows"]}
    assert rows[(FAULTY, int8.id)]["outcome"] == "failed to load" and "images_per_s" not in rows[(FAULTY, int8.id)]
    assert rows[(FAULTY, u8s8.id)]["outcome"] == "failed while scoring"
    assert "non-finite" in rows[(FAULTY, u8s8.id)]["reason"]
    timed = rows[("onnxruntime", u8s8.id)]
    # timed, not how fast: two rounds under another process's load prove nothing about speed
    assert timed["outcome"] == "scored" and timed["images_per_s"] > 0
    # honest on the first 256 images where it is within the allowed drop (on AVX2 without VNNI, ORT's u8s8 kernels
    # saturate and it is not): the row says which, by its own figures
    assert timed["honest"] == (timed["drop_points"] <= MAX_ACCURACY_DROP_POINTS)
    assert timed["best_float"] in ("fp32 on onnxruntime", "fp32 on openvino_default")
    assert timed["vs_ort_fp32"] is not None and timed["vs_best_float"] is not None
    assert (measured["fastest"].get("b64-t1") or {}).get("model") == (u8s8.id if timed["honest"] else None)
    text = bench_report.markdown(measured)
    assert "2 deployments could not run" in text and f"{int8.id} on {FAULTY}: failed to load" in text


@pytest.mark.slow
def test_ptq_tune_records_the_candidates_a_runtime_failed_and_chooses_among_the_rest(
    inject, user_model, tmp_path, monkeypatch, capsys
) -> None:
    from ptq_core import tune

    inject(refuse=("u8s8-minmax",))
    monkeypatch.setattr(tune, "SPEED_ROUNDS", 2)  # the bookkeeping is under test, not the timing
    monkeypatch.setattr(speed, "SEGMENT_S", 0.01)
    monkeypatch.setattr(tune, "HEAD_TO_HEAD_ROUNDS", 2)
    calibration = tiny_data(tmp_path / "calibration.npz", n=600)
    out = tmp_path / "tuned"
    args = ["tune", "--onnx", user_model["onnx"], "--data", user_model["data"], "--calibration", calibration,
            "--cache", user_model["cache"], "--max-drop", "3", "--cells", *USER_CELLS, "--out", out]  # fmt: skip
    status = cli.main([str(a) for a in args])
    printed = capsys.readouterr().out
    assert status == 1, printed
    result = json.loads((out / "tune.json").read_text())
    failed = {f["candidate"]: f for f in result["failed_candidates"]}
    assert failed and all(f["runtime"] == FAULTY and f["outcome"] == "failed to load" for f in failed.values())
    assert all("u8s8-minmax" in name for name in failed)
    assert result["chosen"]["runtime"] != FAULTY or "u8s8" not in result["chosen"]["cell"]
    assert "candidates failed" in (out / "tune.md").read_text()
    assert f"FAILED candidate tiny-onnxruntime-u8s8-minmax-per_channel on {FAULTY}" in printed


def test_a_quantizer_that_raises_on_one_cell_is_a_result_and_the_others_are_checked(
    user_model, monkeypatch, tmp_path, capsys
) -> None:
    import ptq_core.backends.onnxruntime as ort_backend

    quantize = ort_backend.quantize

    def raising(inputs, cell, out) -> None:
        if cell.dtype == "int8":
            raise AssertionError("scale issue")  # what ORT's quantizer raises on NaN weights
        quantize(inputs, cell, out)

    monkeypatch.setattr(ort_backend, "quantize", raising)
    out = tmp_path / "report"
    # 57 calibration images: a key no other test builds under, so the int8 cell is never found cached
    args = ["run", "--onnx", user_model["onnx"], "--data", user_model["data"], "--samples", "57", "--out", out,
            "--cache", user_model["cache"], "--cells", *USER_CELLS]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 1
    printed = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert results["failed_builds"] == {
        "tiny-onnxruntime-int8-minmax-per_channel": "onnxruntime: AssertionError: scale issue"
    }
    assert [row["cell"] for row in results["cells"]] == ["tiny-onnxruntime-u8s8-minmax-per_channel"]
    assert "FAILED evaluation tiny-onnxruntime-int8-minmax-per_channel: failed to build" in printed.out
    assert "Traceback" not in printed.err
    only = [*args[: args.index("--out")], "--out", tmp_path / "only", "--cache", user_model["cache"], "--cells",
            USER_CELLS[1]]  # fmt: skip
    assert cli.main([str(a) for a in only]) == 1  # every cell it selects fails to build: still a report
    results = json.loads((tmp_path / "only" / "results.json").read_text())
    assert results["cells"] == [] and list(results["failed_builds"]) == ["tiny-onnxruntime-int8-minmax-per_channel"]
    assert results["models"]["tiny"]["accuracy"] > 0.9  # FP32 is still reported
