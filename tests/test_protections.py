"""The suite's protections, pinned: what the CIFAR-10 unpickler admits, what keys an artifact, a cached
prediction and a baseline, and every limit just inside and just outside.

A protection weakened by one line (a global admitted, a library left out of a key, ``>`` for ``>=``) keeps
every real cell green; these tests fail it (``.ci/mutations.py`` proves they do). Nothing here builds a
real model: the stores, builds and predictions are tiny fakes, so each test takes milliseconds.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import itertools
import os
import pickle
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptq_core import baselines, cache, cifar10, cli, predictions
from ptq_core.backends import BACKENDS
from ptq_core.baselines import BaselineChanged
from ptq_core.calibration import CalibrationConfig, CalibrationSet
from ptq_core.cifar10 import read_batch
from ptq_core.errors import PTQError
from ptq_core.eval import Answers
from ptq_core.formats import FORMATS, Format, Inspection
from ptq_core.inspections import inspection_of, openvino_layers
from ptq_core.machine import baseline_id, libraries_of
from ptq_core.matrix import Cell
from ptq_core.models import DEFAULT_MODEL, MODELS
from ptq_core.runtimes import RUNTIMES, Runtime
from ptq_core.user_data import check_labels
from ptq_core.workspace import ArtifactStore
from tests.onnx_models import make_model

# --- the CIFAR-10 unpickler -------------------------------------------------------------------------------


def test_the_unpickler_admits_exactly_what_a_data_batch_needs() -> None:
    """numpy arrays and scalars (under numpy 1's and numpy 2's module names) and the bytes codec: nothing
    that calls, imports or reaches an attribute."""
    assert cifar10._ALLOWED_GLOBALS == {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }


class Call:
    """Unpickles as ``fn(*args)``: what a crafted batch uses to run code."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


TOUCH = "open('pwned', 'w').close()"
# (the global a crafted batch names, as pickle writes it) -> the call; each would create ./pwned if it ran
DANGEROUS: dict[str, Call] = {
    "builtins.eval": Call(builtins.eval, TOUCH),
    "builtins.exec": Call(builtins.exec, TOUCH),
    "io.open": Call(builtins.open, "pwned", "w"),
    "builtins.getattr": Call(builtins.getattr, Call(builtins.__import__, "os"), "system"),
    "builtins.__import__": Call(builtins.__import__, "os"),
    "builtins.compile": Call(builtins.compile, TOUCH, "batch", "exec"),
    f"{os.system.__module__}.system": Call(os.system, "touch pwned"),
    "subprocess.Popen": Call(subprocess.Popen, ["touch", "pwned"]),
    "subprocess.check_output": Call(subprocess.check_output, ["touch", "pwned"]),
    "importlib.import_module": Call(importlib.import_module, "os"),
    f"{pickle.loads.__module__}.loads": Call(pickle.loads, pickle.dumps(Call(os.system, "touch pwned"))),
    "numpy.load": Call(np.load, "pwned.npy", None, True),  # allow_pickle=True
    "shutil.rmtree": Call(shutil.rmtree, "data"),
}


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])  # GLOBAL and STACK_GLOBAL opcodes
@pytest.mark.parametrize("name", DANGEROUS)
def test_a_batch_that_names_a_dangerous_global_is_refused_before_it_runs(name, protocol, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    path = tmp_path / "test_batch"
    # under its Python 3 name (fix_imports would write builtins as __builtin__ for protocols 0-2)
    path.write_bytes(pickle.dumps({b"data": DANGEROUS[name], b"labels": []}, protocol=protocol, fix_imports=False))
    with pytest.raises(PTQError, match=rf"global '{name}' is not allowed in a CIFAR-10 batch"):
        read_batch(path)
    assert not (tmp_path / "pwned").exists() and (tmp_path / "data").is_dir()


def test_a_batch_that_names_a_global_by_its_python_2_name_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": DANGEROUS["builtins.eval"], b"labels": []}, protocol=2))
    with pytest.raises(PTQError, match=r"global '__builtin__.eval' is not allowed"):
        read_batch(path)
    assert not (tmp_path / "pwned").exists()


# --- what keys an artifact ----------------------------------------------------------------------------------

# Every library whose release can change the bytes a backend writes: the FP32 export's (its source format's),
# the quantizer's, numpy's and Python's. Pinned here, not read from the declarations they check.
ARTIFACT_LIBRARIES = {
    "onnxruntime": ("python", "numpy", "torch", "onnxscript", "onnx", "onnxruntime"),
    "pytorch": ("python", "numpy", "torch", "torchao"),
    # nncf.quantize on an ONNX model collects its statistics by running the FP32 model in ONNX Runtime
    # (nncf/onnx/engine.py)
    "nncf": ("python", "numpy", "torch", "onnxscript", "onnx", "nncf", "onnxruntime"),
}
# the modules whose code decides an artifact: the backend's, the calibration set's and the key's own
ARTIFACT_CODE = ("workspace", "cache", "calibration", "backends/__init__")


class TinyStore(ArtifactStore):
    """An artifact store of 20 calibration images and placeholder FP32 files: keys and builds, no model."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.files = {}
        for fmt in ("onnx", "pt2"):
            self.files[fmt] = models_dir / f"fp32.{fmt}"
            self.files[fmt].parent.mkdir(parents=True, exist_ok=True)
            self.files[fmt].write_bytes(f"FP32 {fmt}".encode())
        labels = np.arange(20) % 10
        self.calib = CalibrationSet(np.zeros((20, 32, 32, 3), np.float32), labels, np.arange(20), CalibrationConfig())
        self.test = cifar10.Split("test", np.zeros((4, 32, 32, 3), np.uint8), np.arange(4))

    def split(self, name: str = "test") -> cifar10.Split:
        return self.test

    def calibration(
        self, config: CalibrationConfig = CalibrationConfig(), model: str = DEFAULT_MODEL
    ) -> CalibrationSet:
        return self.calib

    def fp32(self, fmt: str, model: str = DEFAULT_MODEL) -> Path:
        return self.files[fmt]

    def fp32_module(self, model: str = DEFAULT_MODEL) -> Any:
        raise AssertionError("no backend runs here")

    def data_sha256(self, name: str = "test") -> str:
        return hashlib.sha256(self.test.images.tobytes()).hexdigest()


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> tuple[TinyStore, list[str]]:
    """A tiny store whose backends' ``quantize`` only write a placeholder, and the cells they built."""
    built: list[str] = []

    def quantize(inputs: Any, cell: Cell, out: Path) -> None:
        built.append(cell.id)
        out.write_bytes(b"8-bit")

    for backend in BACKENDS.values():
        monkeypatch.setattr(backend.module, "quantize", quantize)
    return TinyStore(tmp_path / "models"), built


def new_release(monkeypatch, library: str) -> None:
    """Fake an upgrade of ``library`` (a distribution name, or "python")."""
    if library == "python":
        monkeypatch.setattr(cache.platform, "python_version", lambda: "3.99.0")
        return
    installed = cache._version
    monkeypatch.setattr(
        cache, "_version", lambda name: f"{installed(name)}.post1" if name == library else installed(name)
    )


@pytest.mark.parametrize(
    ("backend", "library"),
    [(b, lib) for b, libs in ARTIFACT_LIBRARIES.items() for lib in libs],
)
def test_a_new_release_of_a_library_that_builds_an_artifact_rebuilds_it(store, backend, library, monkeypatch) -> None:
    ws, built = store
    cell = Cell(backend)
    path = ws.quantized(cell)
    assert ws.quantized(cell) == path and built == [cell.id]  # reused under the same key
    new_release(monkeypatch, library)
    ws.quantized(cell)
    assert built == [cell.id] * 2, f"{library} is not in the key of {cell.id}"


def test_a_release_of_a_library_that_does_not_build_it_reuses_it(store, monkeypatch) -> None:
    ws, built = store
    cell = Cell("onnxruntime")
    ws.quantized(cell)
    for library in ("openvino", "torchao", "nncf"):  # runtimes' and other backends' libraries
        new_release(monkeypatch, library)
    ws.quantized(cell)
    assert built == [cell.id]


def edited_package(tmp_path: Path, monkeypatch) -> Path:
    """A copy of ptq_core's sources that ``cache.code_digest`` reads instead of the real ones."""
    copy = tmp_path / "ptq_core"
    shutil.copytree(cache.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "weights", "probes"))
    monkeypatch.setattr(cache, "PACKAGE", copy)
    return copy


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("module", [*ARTIFACT_CODE, "backend"])
def test_an_edit_to_the_code_that_builds_an_artifact_rebuilds_it(store, backend, module, tmp_path, monkeypatch) -> None:
    ws, built = store
    package = edited_package(tmp_path, monkeypatch)
    cell = Cell(backend)
    ws.quantized(cell)
    source = package / f"{f'backends/{backend}' if module == 'backend' else module}.py"
    source.write_text(source.read_text() + "\n# edited\n")
    ws.quantized(cell)
    assert built == [cell.id] * 2, f"{source.name} is not in the key of {cell.id}"


def test_an_edit_elsewhere_reuses_the_artifact(store, tmp_path, monkeypatch) -> None:
    ws, built = store
    package = edited_package(tmp_path, monkeypatch)
    ws.quantized(Cell("onnxruntime"))
    for name in ("checks", "render", "backends/pytorch", "formats/onnx"):  # the ONNX file is the FP32 key's
        (package / f"{name}.py").write_text((package / f"{name}.py").read_text() + "\n# edited\n")
    ws.quantized(Cell("onnxruntime"))
    assert built == [Cell("onnxruntime").id]


# --- what keys a cached prediction and a baseline -----------------------------------------------------------

RUNTIME_LIBRARIES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "openvino_default": ("openvino",),
                     "torch": ("torch",)}  # fmt: skip


@pytest.mark.parametrize(
    ("runtime", "library"), [(rt, lib) for rt, libs in RUNTIME_LIBRARIES.items() for lib in ("python", "numpy", *libs)]
)
def test_a_new_release_of_a_runtimes_library_scores_its_predictions_again(store, runtime, library, monkeypatch) -> None:
    ws, _ = store
    scored: list[str] = []

    def answer(artifact: Path, images: np.ndarray, spec: Any, rt: str) -> Answers:
        scored.append(rt)
        return Answers(np.arange(len(images)), {1: (1, 10), len(images): (len(images), 10)}, 0.0)

    monkeypatch.setattr(predictions, "answer", answer)
    artifact = ws.files[RUNTIMES[runtime].format]
    for _ in range(2):
        assert predictions.predictions_on_test(ws, artifact, runtime).tolist() == [0, 1, 2, 3]
    assert scored == [runtime]
    new_release(monkeypatch, library)
    predictions.predictions_on_test(ws, artifact, runtime)
    assert scored == [runtime] * 2, f"{library} is not in the key of predictions on {runtime}"


@pytest.mark.parametrize(
    ("fmt", "change"),
    [(f, change) for f in FORMATS for change in ("python", "numpy", *FORMATS[f].libraries, "its reader", "the file")],
)
def test_a_file_is_inspected_again_when_what_decides_its_inspection_changes(store, fmt, change, tmp_path, monkeypatch):
    ws, _ = store
    read: list[str] = []
    facts = Inspection(3, 3, True, ("int8",), ("uint8",), ("per_channel",), 120, 0, 200, {"a1": 0.05})

    def inspect(self: Format, path: Path) -> Inspection:
        read.append(path.name)
        return facts

    monkeypatch.setattr(Format, "inspect", inspect)
    artifact, folder = ws.files[fmt], ws.models_dir
    assert inspection_of(artifact, folder) == inspection_of(artifact, folder) == facts and read == [artifact.name]
    if change == "its reader":
        reader = edited_package(tmp_path, monkeypatch) / "formats" / f"{FORMATS[fmt].module}.py"
        reader.write_text(reader.read_text() + "\n# edited\n")
    elif change == "the file":
        artifact.write_bytes(artifact.read_bytes() + b" rebuilt")
    else:
        new_release(monkeypatch, change)
    assert inspection_of(artifact, folder) == facts
    assert read == [artifact.name] * 2, f"{change} is not in the key of {fmt}'s inspection"


@pytest.mark.parametrize("change", ["python", "numpy", "openvino", "the compiling code", "the CPU", "the file"])
def test_a_file_is_compiled_again_for_its_openvino_layers_when_what_decides_them_changes(
    store, change, tmp_path, monkeypatch
) -> None:
    from ptq_core import adapters, machine

    ws, _ = store
    compiled: list[str] = []
    op = SimpleNamespace(get_rt_info=lambda: {"layerType": np.str_("Convolution"), "runtimePrecision": np.str_("u8")})

    def openvino_model(path: Path, threads: int, precision: str | None) -> Any:
        compiled.append(precision)
        return SimpleNamespace(get_runtime_model=lambda: SimpleNamespace(get_ordered_ops=lambda: [op]))

    monkeypatch.setattr(adapters, "openvino_model", openvino_model)
    artifact, folder = ws.files["onnx"], ws.models_dir
    assert openvino_layers(artifact, folder) == openvino_layers(artifact, folder) == [("Convolution", "u8")]
    assert compiled == ["f32"]  # as the openvino runtime compiles it
    if change == "the compiling code":
        adapter = edited_package(tmp_path, monkeypatch) / "adapters.py"
        adapter.write_text(adapter.read_text() + "\n# edited\n")
    elif change == "the CPU":
        monkeypatch.setattr(machine, "cpu_capability", lambda: "another CPU")
    elif change == "the file":
        artifact.write_bytes(artifact.read_bytes() + b" rebuilt")
    else:
        new_release(monkeypatch, change)
    openvino_layers(artifact, folder)
    assert compiled == ["f32"] * 2, f"{change} is not in the key of the OpenVINO layers"


@pytest.mark.parametrize("backend", list(ARTIFACT_LIBRARIES))
def test_a_baseline_id_names_every_library_of_the_backend_format_and_runtime(backend, monkeypatch) -> None:
    cell = Cell(backend)
    for runtime in (rt.name for rt in cell.runtimes):
        libraries = {*ARTIFACT_LIBRARIES[backend], *RUNTIME_LIBRARIES[runtime]} - {"python"}
        assert set(libraries_of(cell, runtime)) >= libraries
        before = baseline_id(cell, runtime)
        for library in sorted(libraries):
            with monkeypatch.context() as m:
                new_release(m, library)
                assert baseline_id(cell, runtime) != before, f"{library} is not in {cell.id}'s baseline id on {runtime}"


# --- known failures ---------------------------------------------------------------------------------------


def test_a_known_failure_matches_no_other_registered_model() -> None:
    """Measured on ResNet8's cells, a known failure says nothing of MobileNetV1's same cell (nor the reverse),
    on any runtime and CPU: each model's cells are measured apart (a user's model: test_failures_are_results)."""
    from ptq_core.known_failures import KNOWN_FAILURES
    from ptq_core.matrix import CELLS

    for known in KNOWN_FAILURES:
        measured = [cell for cell in CELLS if cell.model in known.models and known.applies(cell)]
        assert measured, known.reason
        for cell in measured:
            for model in {"resnet8", "mobilenetv1"} - set(known.models):
                twin = cell.replace(model=model)
                for check, runtime, cpu in itertools.product(known.checks, [*RUNTIMES, None], ("amx", "avx512vnni")):
                    assert not known.matches(twin, check, runtime, cpu), (twin.id, check, runtime, cpu)


# --- limits: labels, the baseline tolerance, the speed ratio -----------------------------------------------


@pytest.mark.parametrize(
    ("labels", "accepted"),
    [((0, 1, 2), True), ((2, 2), True), ((0, 1, 2, 3), False), ((-1, 0, 1), False), ((3,), False)],
    ids=["0..2", "2..2", "0..3", "-1..1", "3..3"],
)
def test_labels_lie_in_the_models_classes(labels, accepted) -> None:
    labels = np.array(labels)
    if accepted:
        check_labels(labels, 3, "--data x.npz")
    else:
        with pytest.raises(PTQError, match=rf"labels run {labels.min()}..{labels.max()}, but the model answers 3 "):
            check_labels(labels, 3, "--data x.npz")


def three_classes(path: Path) -> Path:
    """(N, 3, 8, 8) -> (N, 3): the mean of each channel, through a dense layer."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "w"], ["y"]),
        ],
        "three_classes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")],
    )
    onnx.save(make_model(graph), str(path))
    return path


@pytest.mark.parametrize("option", ["--data", "--calibration"])
@pytest.mark.parametrize("top", [3, -1], ids=["one-over", "negative"])
def test_ptq_run_refuses_labels_one_past_the_classes(option, top, tmp_path, capsys) -> None:
    images = np.random.default_rng(0).random((40, 3, 8, 8), dtype=np.float32)
    good, bad = np.arange(40) % 3, np.arange(40) % 3
    bad[-1] = top
    np.savez(tmp_path / "data.npz", images=images, labels=bad if option == "--data" else good)
    np.savez(tmp_path / "calib.npz", images=images, labels=bad)
    args = ["run", "--onnx", three_classes(tmp_path / "labels_boundary.onnx"), "--data", tmp_path / "data.npz",
            "--out", tmp_path / "out", "--cache", tmp_path / "cache"]  # fmt: skip
    if option == "--calibration":
        args += ["--calibration", tmp_path / "calib.npz"]
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in args])
    assert exc.value.code == 2
    named = tmp_path / ("data.npz" if option == "--data" else "calib.npz")
    assert (
        f"{option} {named} labels run {min(top, 0)}..{max(top, 2)}, but the model answers 3" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.fixture
def registry():
    """Models registered by the test, unregistered after it."""
    before = dict(MODELS)
    yield
    for name in set(MODELS) - set(before):
        del MODELS[name]


def test_labels_up_to_the_last_class_are_accepted(tmp_path, registry) -> None:
    from ptq_core.user import UserStore

    images = np.random.default_rng(0).random((40, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(40) % 3)
    store = UserStore.open(three_classes(tmp_path / "labels_boundary.onnx"), tmp_path / "data.npz", samples=30)
    assert store.model.num_classes == 3 and store.data.labels.max() == 2


LABELS = np.arange(10_000) % 10
SUBJECT = "resnet8-x-on-y"


def judged(root: Path, here: str, predictions: np.ndarray, tolerance: float = 0.25) -> baselines.Verdict:
    digest = hashlib.sha256(predictions.astype(np.uint8).tobytes()).hexdigest()
    data = baselines.record(int((predictions == LABELS).sum()), 1.0, digest)
    return baselines.judge(root, root / here, SUBJECT, data, predictions, LABELS, tolerance)


def flipped(predictions: np.ndarray, wrong: int = 0, right: int = 0) -> np.ndarray:
    out = predictions.copy()
    hits, misses = np.flatnonzero(out == LABELS), np.flatnonzero(out != LABELS)
    out[hits[:wrong]] = (LABELS[hits[:wrong]] + 1) % 10
    out[misses[:right]] = LABELS[misses[:right]]
    return out


@pytest.fixture
def committed(tmp_path: Path) -> np.ndarray:
    """A baseline of 8,700 right of 10,000 under "old-stack"."""
    base = LABELS.copy()
    base[:1300] = (base[:1300] + 1) % 10
    digest = hashlib.sha256(base.astype(np.uint8).tobytes()).hexdigest()
    baselines.write(tmp_path / "old-stack", SUBJECT, baselines.record(8700, 1.0, digest), base)
    return base


@pytest.mark.parametrize(("wrong", "passes"), [(25, True), (26, False)], ids=["0.25-points", "0.26-points"])
def test_the_baseline_tolerance_against_another_stack(tmp_path, committed, wrong, passes) -> None:
    if passes:
        with pytest.warns(BaselineChanged, match=r"8700 -> 8675 against old-stack \(25 images now wrong"):
            assert judged(tmp_path, "new-stack", flipped(committed, wrong=wrong)).passed
    else:
        verdict = judged(tmp_path, "new-stack", flipped(committed, wrong=wrong))
        assert not verdict.passed and "8674 correct vs 8700 under old-stack: a drop of 0.26 points" in verdict.message


def test_swapped_flips_under_the_same_stack_fail(tmp_path, committed) -> None:
    """One image now wrong and one now right: the same count, other predictions, under the same versions."""
    verdict = judged(tmp_path, "old-stack", flipped(committed, wrong=1, right=1))
    assert not verdict.passed and not verdict.write
    assert "changed under the same library versions (old-stack): 8700 -> 8700 correct; 1 images now wrong" in (
        verdict.message
    )
    assert judged(tmp_path, "old-stack", committed).passed


def test_the_speed_ratio_is_8bit_over_fp32(tmp_path, monkeypatch) -> None:
    """On a runtime where the FP32 file takes 4 ms a batch and the 8-bit one 1 ms, the ratio is ~4, not ~0.25."""
    from ptq_core.speed import Guard, measure_guard

    def load(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
        seconds = 0.004 if path.name == "fp32.onnx" else 0.001

        def predict(images: np.ndarray) -> np.ndarray:
            time.sleep(seconds)
            return np.zeros((len(images), 10), np.float32)

        return predict

    monkeypatch.setitem(RUNTIMES, "timed", Runtime("timed", "onnx", (), load))
    for name in ("fp32.onnx", "8bit.onnx"):
        (tmp_path / name).write_bytes(b"")
    images = np.zeros((1, 32, 32, 3), np.float32)
    guard = Guard(Cell("onnxruntime"), "timed", 1)
    ratio = measure_guard(tmp_path / "fp32.onnx", tmp_path / "8bit.onnx", guard, images, rounds=3)
    assert 2 < ratio < 8
