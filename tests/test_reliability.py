"""Faults and bad input: fuzzed batches, killed builds, concurrent workers, unwritable folders, determinism."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, find, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from ptq_core.cache import BUILD_LOG, build_once
from ptq_core.calibration import CalibrationConfig, calibration_set
from ptq_core.cifar10 import read_batch
from ptq_core.errors import PTQError
from ptq_core.eval import predict_scores
from ptq_core.matrix import Cell
from ptq_core.models import get_model
from ptq_core.runtimes import as_predictor

ROOT = Path(__file__).parents[1]
RESNET8 = get_model("resnet8")

# things a corrupt or hostile batch file might hold
_values = st.one_of(
    arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.float64]), array_shapes(max_dims=3, max_side=8)),
    st.lists(st.integers(-20, 20), max_size=12),
    st.binary(max_size=20),
    st.none(),
    st.integers(),
)
_batches = st.dictionaries(st.sampled_from([b"data", b"labels", b"batch_label", "data", b"filenames"]), _values)
# well-formed batches (N x 3072 uint8, N labels), with labels that may stray out of 0..9: the valid branch
_well_formed = st.integers(0, 3).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            b"data": arrays(np.uint8, (n, 3072)),
            b"labels": st.lists(st.integers(-1, 10), min_size=n, max_size=n),
        }
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=300),
        _batches.map(pickle.dumps),
        _well_formed.map(pickle.dumps),
        st.lists(st.integers()).map(pickle.dumps),
    )
)
def test_malformed_batch_gets_a_ptq_error_or_valid_arrays(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    try:
        data, labels = read_batch(path)
    except PTQError as exc:
        assert str(path) in str(exc)
        return
    assert data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    assert labels.shape == (len(data),) and ((0 <= labels) & (labels <= 9)).all()
    event("valid arrays")


def test_fuzzed_batches_reach_the_valid_branch(tmp_path: Path) -> None:
    """The fuzz above also writes batches the loader accepts (it once could not: 3072 columns never came up)."""
    path = tmp_path / "data_batch_1"

    def accepted(batch: dict) -> bool:
        path.write_bytes(pickle.dumps(batch))
        try:
            return len(read_batch(path)[1]) > 0
        except PTQError:
            return False

    find(_well_formed, accepted, settings=settings(database=None))


@settings(max_examples=100, deadline=None)
@given(
    images=arrays(
        np.float32,
        st.tuples(st.integers(10, 40), st.just(32), st.just(32), st.just(3)),
        elements=st.sampled_from([0.0, 128.0, 255.0, np.nan, np.inf, -1.0, 300.0]),
    )
)
def test_calibration_from_bad_pixels_gets_a_ptq_error(images: np.ndarray) -> None:
    labels = np.arange(len(images)) % 10
    try:
        calib = calibration_set(images, labels, CalibrationConfig(num_samples=10), RESNET8)
    except PTQError as exc:
        assert "resnet8's input values, in [0, 255]" in str(exc)
        return
    assert np.isfinite(calib.images).all() and 0 <= calib.images.min() and calib.images.max() <= 255


@settings(max_examples=100, deadline=None)
@given(labels=arrays(np.int64, st.integers(0, 45), elements=st.integers(-2, 11)))
def test_calibration_from_bad_labels_gets_a_ptq_error(labels: np.ndarray) -> None:
    images = np.zeros((len(labels), 32, 32, 3), np.uint8)
    try:
        calib = calibration_set(images, labels, CalibrationConfig(num_samples=10), RESNET8)
    except PTQError:
        return
    assert np.bincount(calib.labels, minlength=10).tolist() == [1] * 10


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (4, 32, 32), (32, 32, 3)])
def test_calibration_from_wrong_shape_gets_a_ptq_error(shape) -> None:
    with pytest.raises(PTQError, match=r"shape \(N, 32, 32, 3\)"):
        calibration_set(np.zeros(shape, np.uint8), np.arange(4) % 10, CalibrationConfig(num_samples=10), RESNET8)


def test_build_killed_mid_write_leaves_nothing_a_later_run_uses(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from ptq_core.cache import build_once
        def build(tmp):
            tmp.write_bytes(b"half an artifact")
            os.kill(os.getpid(), signal.SIGKILL)
        build_once(Path({str(tmp_path / "m.onnx")!r}), {{"v": 1}}, build)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.key.json").exists()
    path = build_once(tmp_path / "m.onnx", {"v": 1}, lambda tmp: tmp.write_bytes(b"whole"))  # lock is free again
    assert path.read_bytes() == b"whole"
    assert len((tmp_path / BUILD_LOG).read_text().splitlines()) == 1


def test_unwritable_models_folder_gets_a_clear_error() -> None:
    with pytest.raises(PTQError, match=r"cannot write to /proc/ptq-models .*PTQ_MODELS_DIR"):
        build_once(Path("/proc/ptq-models/m.onnx"), {"v": 1}, lambda tmp: tmp.write_bytes(b"x"))


def test_full_disk_gets_a_clear_error(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(PTQError, match=r"building .*m.onnx failed.*free space"):
        build_once(tmp_path / "m.onnx", {"v": 1}, build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.lock"]


# Eight tests over four artifacts, each build slow enough that concurrent builders would overlap: the lock
# and the recorded key, not real models, are what make a build happen once (real models take 30 s here).
_BUILDERS = """
import os, time
from pathlib import Path
import pytest
from ptq_core.cache import build_once

@pytest.mark.parametrize("i", range(8))
def test_build(i):
    name = f"artifact-{i % 4}.bin"

    def build(tmp):
        time.sleep(0.3)
        tmp.write_bytes(name.encode())

    path = build_once(Path(os.environ["PTQ_MODELS_DIR"]) / name, {"artifact": name}, build)
    assert path.read_bytes() == name.encode()
"""


def _run_pytest(folder: Path, models: Path, workers: int) -> subprocess.Popen:
    env = {**os.environ, "PTQ_MODELS_DIR": str(models), "PYTEST_ADDOPTS": ""}
    env.pop("PYTEST_XDIST_WORKER", None)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers), "test_builders.py"]
    return subprocess.Popen(args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _builds(models: Path) -> list[str]:
    return sorted(line.split()[2] for line in (models / BUILD_LOG).read_text().splitlines())


@pytest.mark.e2e
@pytest.mark.slow
def test_four_workers_and_a_second_pytest_build_each_artifact_once(tmp_path: Path) -> None:
    (tmp_path / "test_builders.py").write_text(_BUILDERS)
    models = tmp_path / "models"
    runs = [_run_pytest(tmp_path, models, 4), _run_pytest(tmp_path, models, 2)]  # at once, on one cache
    try:
        outs = [run.communicate(timeout=300)[0] for run in runs]
    finally:
        for run in runs:  # a failed wait leaves no process behind
            run.kill()
            run.communicate()
    for run, out in zip(runs, outs, strict=True):
        assert run.returncode == 0, out[-3000:]
        assert "8 passed" in out, out[-3000:]
    assert _builds(models) == [f"artifact-{i}.bin" for i in range(4)]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    "cell", [Cell("onnxruntime", "int8", "percentile"), Cell("pytorch", "uint8", "percentile")], ids=lambda c: c.id
)
def test_same_inputs_give_identical_artifacts_and_predictions(cell: Cell, ws, tmp_path: Path, test_split) -> None:
    from dataclasses import replace

    builds = [replace(ws, models_dir=tmp_path / name).quantized(cell) for name in ("a", "b")]
    if cell.backend != "pytorch":  # torch.export archives differ byte-wise from save to save
        assert builds[0].read_bytes() == builds[1].read_bytes()
    images = test_split.images[:2000]
    first, second = (predict_scores(path, images).argmax(1) for path in builds)
    assert np.array_equal(first, second)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("cell", [Cell("onnxruntime", "uint8"), Cell("pytorch", "uint8")], ids=lambda c: c.id)
def test_predictions_do_not_depend_on_thread_count(cell: Cell, quantized, test_split, monkeypatch) -> None:
    images = test_split.images[:2000]
    probs = {}
    for workers in ("1", "2"):  # 2 threads per process, then 1: what -n 1 and -n 2 give each worker
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
        probs[workers] = as_predictor(quantized(cell))(images)
    assert np.array_equal(probs["1"].argmax(1), probs["2"].argmax(1))
