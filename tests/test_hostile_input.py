"""``ptq run``, ``ptq tune --onnx`` and the pytest plugin given what a fuzzer (or a hurried user) gives them.

Each refused input exits 2 before any model is built, with a message that names the option or file and
the fix, never a traceback; what is accepted is reported truthfully (no wrapped class ids, no NaN in a
JSON file), and no folder the tool did not write is ever replaced. Tiny models and data, built here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_run import _data, _tiny_onnx, ptq_run

from ptq_core import cli, output
from ptq_core.errors import PTQError

CELL = "onnxruntime-u8s8-minmax-per_tensor"  # one cell: a run on the tiny model takes seconds


def no_held_out(test):
    """Every scored image calibrates in `first_run`: numpy warns that held-out accuracy averages no image."""
    test = pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")(test)
    return pytest.mark.filterwarnings("ignore:invalid value encountered in scalar divide:RuntimeWarning")(test)


def _model(path: Path, graph: onnx.GraphProto) -> Path:
    # IR 10, opset 17: what every onnx / onnxruntime release the project allows reads
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _balanced(path: Path, n: int = 21) -> Path:
    """``n`` images, as many of each of the tiny model's 3 classes, each brightest in its class's channel (the
    tiny model, a mean per channel, gets them right: a model at chance is refused): --samples 200 takes all."""
    labels = np.arange(n) % 3
    images = np.random.default_rng(1).random((n, 3, 32, 32), dtype=np.float32) * 0.5
    images[np.arange(n), labels] += 0.5
    return _data(path, images, labels)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny")
    return {"onnx": _tiny_onnx(d / "hostile.onnx"), "data": _balanced(d / "x.npz"), "cache": d / "cache"}


@pytest.fixture(scope="module")
def first_run(tiny, tmp_path_factory) -> tuple[int, Path]:
    """One ptq run on the tiny model, every scored image also calibrating (21 images, --samples 200)."""
    out = tmp_path_factory.mktemp("reports") / "report"
    args = ["--onnx", tiny["onnx"], "--data", tiny["data"], "--out", out, "--cache", tiny["cache"], "--cells", CELL]
    return cli.main(["run", *map(str, args)]), out


def _args(tiny, out: Path, *extra: object) -> list[object]:
    return ["--onnx", tiny["onnx"], "--data", tiny["data"], "--out", out, "--cache", tiny["cache"], "--cells", CELL,
            *extra]  # fmt: skip


# 1. output folders: only a folder this tool wrote is ever replaced


@pytest.mark.parametrize("command", ["run", "tune", "bench"])
def test_a_folder_that_merely_holds_a_results_json_is_refused_and_left_whole(command, tmp_path, capsys) -> None:
    project = tmp_path / "project"
    project.mkdir()
    files = {"results.json": "{}", "tune.json": "{}", "bench.json": "{}", "notes.txt": "my notes"}
    for name, text in files.items():
        (project / name).write_text(text)
    model, data, cache = _tiny_onnx(tmp_path / "hostile.onnx"), _balanced(tmp_path / "x.npz"), tmp_path / "cache"
    argv = {
        "run": ["run", "--onnx", model, "--data", data, "--cache", cache, "--cells", CELL],
        "tune": ["tune", "--onnx", model, "--data", data, "--calibration", data, "--cache", cache, "--max-drop", "1"],
        "bench": ["bench", "--models-dir", cache],
    }[command]
    try:
        status = cli.main([*map(str, argv), "--out", str(project)])
    except SystemExit as exc:
        status = int(exc.code or 0)
    text = capsys.readouterr().err
    assert status == 2, text
    assert f"--out {project} exists and is not an output folder of this command" in text
    assert "Name a new or empty folder" in text
    assert {p.name: p.read_text() for p in project.iterdir()} == files
    assert not cache.exists()  # refused before any work


@pytest.mark.xdist_group("hostile-first-run")  # one ptq run, shared
@no_held_out
def test_an_output_folder_carries_the_tools_marker_and_is_replaced_by_the_next_run(
    tiny, first_run, tmp_path, capsys
) -> None:
    status, out = first_run
    assert status in (0, 1)
    marker = json.loads((out / output.MARKER).read_text())
    assert marker["tool"] == output.TOOL and marker["command"] == "run" and len(marker["run_id"]) == 32
    # a killed run left its temporary folders beside the output; one of a live process is left alone
    dead, alive = _dead_pid(), os.getppid()
    stale = [out.with_name(f".{out.name}.{dead}.tmp"), out.with_name(f".{out.name}.{dead}.old")]
    live = out.with_name(f".{out.name}.{alive}.tmp")
    for folder in (*stale, live):
        folder.mkdir()
        (folder / "results.json").write_text("{")
    (out / "results.md").write_text("edited by hand")  # part of the earlier output: replaced with it
    status, text = ptq_run(capsys, *_args(tiny, out))
    assert status in (0, 1), text
    again = json.loads((out / output.MARKER).read_text())
    assert again["command"] == "run" and again["run_id"] != marker["run_id"]
    assert (out / "results.md").read_text() != "edited by hand"
    assert not any(p.exists() for p in stale) and live.is_dir()
    live_files = sorted(p.name for p in out.parent.iterdir())
    assert live_files == sorted([out.name, live.name])


def test_a_run_killed_between_its_two_renames_gets_the_earlier_output_back(tmp_path) -> None:
    out = tmp_path / "report"
    output.write_folder(out, "run", lambda folder: (folder / "results.json").write_text("{}"))
    old = out.with_name(f".{out.name}.{_dead_pid()}.old")
    out.rename(old)  # killed after moving the earlier output aside, before the new one took its place
    output.check_replaceable(out, "run")
    assert (out / "results.json").read_text() == "{}" and not old.exists()


def test_another_commands_output_is_not_replaced(tmp_path) -> None:
    out = tmp_path / "tuned"
    output.write_folder(out, "tune.json", lambda folder: (folder / "tune.json").write_text("{}"))
    output.check_replaceable(out, "tune")  # an earlier tune output: replaceable by tune
    with pytest.raises(PTQError, match="holds the output of ptq tune, not ptq run"):
        output.check_replaceable(out, "run")


@pytest.mark.parametrize("command", ["run", "tune", "bench"])
@pytest.mark.parametrize("out", [".", ""])
def test_out_naming_the_current_folder_is_refused_at_once(command, out, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # empty: an empty folder is otherwise a fine --out
    model, data = _tiny_onnx(tmp_path / "hostile.onnx"), _balanced(tmp_path / "x.npz")
    argv = {
        "run": ["run", "--onnx", model, "--data", data, "--cache", tmp_path / "cache"],
        "tune": ["tune", "--onnx", model, "--data", data, "--calibration", data, "--max-drop", "1"],
        "bench": ["bench", "--models-dir", tmp_path / "cache"],
    }[command]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*map(str, argv), "--out", out])
    assert exit_info.value.code == 2
    assert re.search(r"--out '\.' is the current folder or holds it: name a folder of its own", capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.onnx", "x.npz"]


def test_a_cache_inside_out_is_refused_before_any_work(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    args = ["--onnx", _tiny_onnx(tmp_path / "hostile.onnx"), "--data", _balanced(tmp_path / "x.npz"), "--out", out,
            "--cache", out / "cache", "--cells", CELL]  # fmt: skip
    status, text = ptq_run(capsys, *args)
    assert status == 2 and f"--cache {out / 'cache'} is inside --out {out}, which is replaced by every run" in text
    assert not out.exists()


@pytest.mark.xdist_group("hostile-first-run")  # one ptq run, shared
@no_held_out
def test_an_input_inside_out_is_refused(tiny, first_run, tmp_path, capsys) -> None:
    _, out = first_run
    status, text = ptq_run(capsys, *_args(tiny, out), "--calibration", out / "artifacts" / "mine.npz")
    assert status == 2 and "--calibration" in text and f"is inside --out {out}" in text


def test_an_out_that_cannot_be_created_is_refused_before_any_work(tmp_path, capsys) -> None:
    model, data = _tiny_onnx(tmp_path / "hostile.onnx"), _balanced(tmp_path / "x.npz")
    status, text = ptq_run(capsys, *_args({"onnx": model, "data": data, "cache": tmp_path / "c"}, data / "report"))
    assert status == 2 and f"{data} is a file, not a folder" in text, text
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_parent_of_out_is_refused_before_any_work(tmp_path, capsys) -> None:
    model, data = _tiny_onnx(tmp_path / "hostile.onnx"), _balanced(tmp_path / "x.npz")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        status, text = ptq_run(capsys, *_args({"onnx": model, "data": data, "cache": tmp_path / "c"}, locked / "r"))
    finally:
        locked.chmod(0o755)
    assert status == 2 and f"{locked} is not writable" in text, text
    assert not (tmp_path / "c").exists()


# 2. class ids past 255


def test_a_model_with_300_classes_scores_100_percent_on_its_own_argmax(tmp_path) -> None:
    from ptq_core.predictions import result_on_test
    from ptq_core.run import RunInputs

    classes = 300
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "classes300",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", classes])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = _model(tmp_path / "classes300.onnx", graph)
    labels = np.arange(2 * classes) % classes
    images = np.eye(classes, dtype=np.float32)[labels] + np.random.default_rng(0).random((2 * classes, classes)) * 0.5
    data = _data(tmp_path / "x.npz", images.astype(np.float32), labels)
    store = RunInputs(model, data, samples=classes, cache_dir=tmp_path / "cache").open()
    assert store.model.num_classes == classes
    result = result_on_test(store, store.fp32("onnx"), "onnxruntime", store.model.name)
    assert result.correct == 2 * classes and result.accuracy == 1.0
    (cached,) = (store.models_dir / "predictions").glob("*.npz")
    assert np.load(cached)["predictions"].dtype == np.uint16


# 3. --max-drop, --seed, --samples


BAD_DROPS = ["nan", "inf", "-inf", "1e9", "101", "-1", "three"]


@pytest.mark.parametrize("drop", BAD_DROPS)
def test_run_refuses_a_max_drop_that_is_not_0_to_100_points(drop, tiny, tmp_path, capsys) -> None:
    status, text = ptq_run(capsys, *_args(tiny, tmp_path / "out"), f"--max-drop={drop}")
    assert status == 2 and f"--max-drop {drop}: give the accuracy drop you accept" in text, text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("drop", BAD_DROPS)
def test_tune_refuses_a_max_drop_that_is_not_0_to_100_points(drop, tiny, tmp_path, capsys) -> None:
    unlabelled = tmp_path / "calib.npz"  # else refused later, for another reason
    np.savez(unlabelled, images=np.zeros((20, 3, 32, 32), np.float32))
    args = ["tune", "--onnx", tiny["onnx"], "--data", tiny["data"], "--calibration", unlabelled,
            "--cache", tmp_path / "cache", "--out", tmp_path / "out", f"--max-drop={drop}"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in args])
    assert exit_info.value.code == 2
    assert f"--max-drop {drop}: give the accuracy drop you accept" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("drop", [float("nan"), float("inf"), 1e9, -0.5])
def test_run_and_tune_functions_refuse_the_same_drops(drop, tiny, tmp_path) -> None:
    from ptq_core.run import RunInputs, run
    from ptq_core.tune import tune

    with pytest.raises(PTQError, match="--max-drop .*: give the accuracy drop you accept"):
        run(RunInputs(tiny["onnx"], tiny["data"], cache_dir=tmp_path / "cache"), tmp_path / "out", drop)
    with pytest.raises(PTQError, match="--max-drop .*: give the accuracy drop you accept"):
        tune(None, drop)  # refused before the workspace is looked at
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_the_plugin_refuses_a_max_drop_that_is_not_0_to_100_points(tmp_path) -> None:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ptq-onnx", str(tmp_path / "m.onnx"),
               "--ptq-data", str(tmp_path / "x.npz"), "--ptq-max-drop", "nan"]  # fmt: skip
    env = {**os.environ, "PYTEST_ADDOPTS": ""}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "--ptq-max-drop nan: give the accuracy drop you accept" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--seed", "-1", "--seed -1: give a calibration sampling seed >= 0"),
        ("--samples", "0", "--samples 0: give a number of calibration images >= 1"),
        ("--samples", "-3", "--samples -3: give a number of calibration images >= 1"),
        ("--jobs", "0", "--jobs 0: give a number of parallel builds >= 1"),
    ],
)
def test_run_refuses_a_negative_seed_or_no_samples_at_parse_time(option, value, message, tiny, tmp_path, capsys):
    status, text = ptq_run(capsys, *_args(tiny, tmp_path / "out"), option, value)
    assert status == 2 and message in text, text
    assert "num_samples" not in text and not (tmp_path / "out").exists()


# 4. results.json is JSON


@pytest.mark.xdist_group("hostile-first-run")  # one ptq run, shared
@no_held_out
def test_results_json_is_strict_json_when_every_scored_image_calibrates(first_run) -> None:
    status, out = first_run
    assert status in (0, 1)
    results = _strict_json((out / "results.json").read_text())
    assert isinstance(results, dict)
    assert results["calibration"]["num_samples"] == 21  # all of them: none is held out
    assert results["fp32"]["heldout_accuracy"] is None
    assert all(row["heldout_accuracy"] is None for row in results["cells"])
    text = (out / "results.md").read_text()
    assert "| held-out |" in text and "nan" not in text.lower()


def test_non_finite_values_are_written_as_null() -> None:
    value = {"a": float("nan"), "b": [float("inf"), 1.5, np.float64("-inf"), np.float32("nan"), 3], "c": (True, None)}
    text = json.dumps(output.finite(value), allow_nan=False)
    assert _strict_json(text) == {"a": None, "b": [None, 1.5, None, None, 3], "c": [True, None]}


# 5. messages that name the thing and the fix


def _zip_with_bytes_as_images(path: Path) -> Path:
    labels = io.BytesIO()
    np.save(labels, np.arange(20) % 3)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", b"these are not the images you are looking for")
        z.writestr("labels.npy", labels.getvalue())
    return path


def _npy(path: Path) -> Path:
    np.save(path, np.zeros((20, 3, 32, 32), np.float32))
    return path


def _shards(d: Path, images: tuple[np.ndarray, ...], labels: tuple[np.ndarray, ...] = ()) -> Path:
    """A folder of shards images-K.npy + labels-K.npy (labels: each image's index mod 3 unless given)."""
    folder = d / "shards"
    folder.mkdir()
    for k, part in enumerate(images):
        np.save(folder / f"images-{k}.npy", part)
        np.save(folder / f"labels-{k}.npy", labels[k] if labels else np.arange(len(part)) % 3)
    return folder


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-1000])
    return path.parent


def _with(folder: Path, name: str, array: np.ndarray) -> Path:
    np.save(folder / name, array)
    return folder


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _no_batch_model(d: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0, axes=[1, 2])],
        "nobatch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    return _model(d / "nobatch.onnx", graph)


def _folder(d: Path) -> Path:
    (d / "export").mkdir()
    _tiny_onnx(d / "export" / "net.onnx")
    return d / "export"


# case: (model maker or None for the tiny model, data maker or None for good data, extra args, message)
HOSTILE = {
    "a directory as --onnx": (_folder, None, (), r"--onnx \S+export is a directory \(it holds net\.onnx\): pass"),
    "a folder without images as --data": (
        None,
        lambda d: d,
        (),
        r"--data \S+ holds no images: it must be a folder holding images\.npy and labels\.npy",
    ),
    "shards of different shapes": (
        None,
        lambda d: _shards(d, (np.zeros((10, 3, 32, 32), np.float32), np.zeros((10, 3, 16, 16), np.float32))),
        (),
        r"shard images-1\.npy holds float32 images of shape \(3, 16, 16\), but images-0\.npy holds float32 of "
        r"shape \(3, 32, 32\): every shard must hold images of one shape and dtype",
    ),
    "a shard with fewer labels than images": (
        None,
        lambda d: _shards(d, (np.zeros((10, 3, 32, 32), np.float32),), labels=(np.arange(9) % 3,)),
        (),
        r"labels-0\.npy holds 9 labels for 10 images: give one label per image",
    ),
    "an images.npy truncated on disk": (
        None,
        lambda d: _truncated(_shards(d, (np.zeros((10, 3, 32, 32), np.float32),)) / "images-0.npy"),
        (),
        r"images-0\.npy is 122,\d+ bytes but its header promises float32 \(10, 3, 32, 32\), 123,008 bytes: the "
        r"file is truncated on disk",
    ),
    "labels with no images of their suffix": (
        None,
        lambda d: _with(_shards(d, (np.zeros((10, 3, 32, 32), np.float32),)), "labels-9.npy", np.arange(10) % 3),
        (),
        r"labels-9\.npy has no images file of the same suffix",
    ),
    "an images.npy without labels": (
        None,
        lambda d: _npy(d / "images.npy"),
        (),
        r"--data: no labels beside the images: a folder holding images\.npy and labels\.npy",
    ),
    "random bytes as .npz": (None, lambda d: _random_bytes(d / "x.npz"), (), r"is not a readable \.npz of arrays"),
    "a zip whose images.npy is not an array": (
        None,
        lambda d: _zip_with_bytes_as_images(d / "x.npz"),
        (),
        r"its `images` member is not a numpy array",
    ),
    "object arrays": (
        None,
        lambda d: _data(d / "x.npz", np.array([{"a": 1}] * 20, dtype=object)),
        (),
        r"is not a readable \.npz of arrays \(it holds pickled objects\)",
    ),
    "a .npy as --data": (
        None,
        lambda d: _npy(d / "x.npy"),
        (),
        r"is a single \.npy array: --data takes an \.npz with `images` and `labels`",
    ),
    "0-d images": (
        None,
        lambda d: _data(d / "x.npz", np.float32(0.5), np.arange(20) % 3),
        (),
        r"`images` is a single value \(float32\), not an array of images",
    ),
    "a model without a batch dimension": (
        _no_batch_model,
        lambda d: _data(d / "x.npz", np.zeros((20, 3, 8, 8), np.float32)),
        (),
        r"shape \(3, 8, 8\)\) has no batch dimension: .*dynamic batch dimension: torch\.onnx\.export",
    ),
    "a class short of its stratified share": (
        None,
        lambda d: _data(d / "x.npz"),  # 7, 7 and 6 images of the 3 classes: 20 stratified need 7 of each
        (),
        r"--samples 200 \(all 20 images\): .* but --data has only 6 images of class 2: pass --samples 18 or fewer",
    ),
    "fewer samples than classes": (
        None,
        None,
        ("--samples", "2"),
        r"--samples 2: a stratified calibration set takes at least one image of each of the 3 classes in --data: "
        r"pass --samples 3 or more",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_exits_2_naming_the_option_and_the_fix(case, tmp_path, capsys) -> None:
    make_model, make_data, extra, message = HOSTILE[case]
    model = make_model(tmp_path) if make_model else _tiny_onnx(tmp_path / "hostile.onnx")
    data = make_data(tmp_path) if make_data else _balanced(tmp_path / "x.npz")
    out, cache = tmp_path / "report", tmp_path / "cache"
    status, text = ptq_run(capsys, "--onnx", model, "--data", data, "--out", out, "--cache", cache, *extra)
    assert status == 2, text
    assert re.search(message, text), text
    for internal in ("allow_pickle", "num_samples", "the split", "Traceback", "fixed batch size of 3"):
        assert internal not in text
    assert not out.exists() and not cache.exists()


# 6. the FP32 model's scores, read from the output --output names and checked at open


def _classifier(
    path: Path, classes: int = 3, features: int = 0, nodes: tuple = (), outputs: tuple = (), inits: tuple = ()
) -> Path:
    """(N, classes, 8, 8) -> the mean of each channel, `m` (N, classes): the brightest channel is the class.
    ``features``: a first output of that many ReLU features (the first ``classes`` of them always 0, so its
    argmax is never a label) before the scores, `logits`. ``nodes``/``outputs``/``inits`` replace the tail."""
    rng = np.random.default_rng(0)
    graph_nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0, axes=[2, 3])]
    graph_outputs, initializers = [], []
    if features:
        bias = np.where(np.arange(features) < classes, -100.0, 1.0).astype(np.float32)
        initializers += [
            numpy_helper.from_array(rng.normal(0, 0.1, (classes, features)).astype(np.float32), "w_features"),
            numpy_helper.from_array(bias, "b_features"),
        ]
        graph_nodes += [
            helper.make_node("MatMul", ["m", "w_features"], ["f"]),
            helper.make_node("Add", ["f", "b_features"], ["fb"]),
            helper.make_node("Relu", ["fb"], ["features"]),
        ]
        graph_outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", features]))
    if nodes:
        graph_nodes += nodes
        graph_outputs += outputs
        initializers += inits
    else:
        graph_nodes.append(helper.make_node("Identity", ["m"], ["logits"]))
        graph_outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]))
    graph = helper.make_graph(
        graph_nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", classes, 8, 8])],
        graph_outputs,
        initializers,
    )
    return _model(path, graph)


def _images(path: Path, n: int = 21, classes: int = 3, labels: np.ndarray | None = None) -> Path:
    """``n`` images of ``_classifier``, as many of each class, brightest in their class's channel."""
    truth = np.arange(n) % classes
    images = np.random.default_rng(2).random((n, classes, 8, 8), dtype=np.float32) * 0.5
    images[np.arange(n), truth] += 0.5
    return _data(path, images, truth if labels is None else labels)


def _status(argv: list[object], capsys) -> tuple[int, str]:
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_scores_read_from_a_features_output_are_refused_and_output_names_the_scores(tmp_path, capsys) -> None:
    """The fuzz report's case: a first output of 96 features, the scores second, was scored as "96 classes",
    FP32 0.00 %, exit 0. It is refused at open, naming the output it read; --output logits reads the scores."""
    model, data = _classifier(tmp_path / "features_first.onnx", features=96), _images(tmp_path / "x.npz")
    out, cache = tmp_path / "report", tmp_path / "cache"
    argv = ["run", "--onnx", model, "--data", data, "--out", out, "--cache", cache, "--cells", CELL]
    status, text = _status(argv, capsys)
    assert status == 2, text
    assert (
        "output 'features' of features_first.onnx (96 scores per image) gets 0 of the 21 --data images right "
        "(0.00%), no better than chance for 96 classes (1.04%)" in text
    )
    assert "pass --output NAME to read the scores from another of its outputs: 'logits' (N, 3)" in text
    assert "Traceback" not in text and not out.exists()

    status, text = _status([*argv, "--output", "nope"], capsys)
    assert status == 2 and "--output 'nope': " in text and "'features' (N, 96), 'logits' (N, 3)" in text, text

    status, text = _status([*argv, "--output", "logits"], capsys)
    assert status in (0, 1), text
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["num_classes"] == 3 and results["fp32"]["accuracy"] == 1.0
    (row,) = results["cells"]
    quantized = onnx.load(str(out / row["artifact"]))
    assert [o.name for o in quantized.graph.output] == ["logits"]  # the features are not quantized, nor scored


def test_tune_and_the_plugin_read_the_output_they_are_told(tmp_path, capsys, monkeypatch) -> None:
    model = _classifier(tmp_path / "features_tuned.onnx", classes=4, features=96)
    data, calibration = _images(tmp_path / "x.npz", classes=4), _images(tmp_path / "calib.npz", n=60, classes=4)
    argv = ["tune", "--onnx", model, "--data", data, "--calibration", calibration, "--cache", tmp_path / "cache",
            "--max-drop", "1", "--out", tmp_path / "tuned"]  # fmt: skip
    status, text = _status(argv, capsys)
    assert status == 2 and "output 'features' of features_tuned.onnx (96 scores per image) gets 0 of" in text, text
    status, text = _status([*argv, "--output", "logits", "--calibration-samples", "0"], capsys)
    assert status == 2, text  # past the open: a user's model has one calibration set, in this set's own terms
    assert "--calibration-samples 0: ptq tune --onnx calibrates every cell on one set, 60 stratified images" in text
    assert "10000 train images" not in text

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTEST_ADDOPTS", "")
    model = _classifier(tmp_path / "features_plugin.onnx", classes=4, features=96)  # one name, one model
    plugin = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--co", "--ptq-onnx", str(model),
              "--ptq-data", str(data), "--ptq-cache", str(tmp_path / "cache"), "--ptq-cells", CELL]  # fmt: skip
    assert pytest.main(plugin) == pytest.ExitCode.USAGE_ERROR
    assert "pass --ptq-output NAME to read the scores from another of its outputs" in capsys.readouterr().err
    assert pytest.main([*plugin, "--ptq-output", "logits"]) == pytest.ExitCode.OK
    assert "test_size_ratio[" in capsys.readouterr().out


def _sqrt_of_means(path: Path) -> Path:
    nodes = (helper.make_node("Sqrt", ["m"], ["y"]),)
    return _classifier(path, nodes=nodes, outputs=(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),))


def _dark(path: Path) -> Path:
    """Three images with a negative channel 0: finite images whose square root is not."""
    _images(path)
    images, labels = np.load(path)["images"], np.load(path)["labels"]
    images[[4, 9, 17], 0] = -1.0
    return _data(path, images, labels)


# case: (model file, model maker, data maker, message): a name of its own (a process registers a name once)
REFUSED_SCORES = {
    "NaN scores for some images": (
        "nan_scores.onnx",
        _sqrt_of_means,
        _dark,
        r"output 'y' of nan_scores\.onnx \(3 scores per image\) on --data \S+x\.npz: 3 of 21 images got non-finite "
        r"scores \(NaN or inf\)\. Fix the model or the images that give them \(the model has no other output for "
        r"--output NAME to read\)",
    ),
    "labels that are not its classes": (
        "shifted_labels.onnx",
        _classifier,
        lambda path: _images(path, labels=(np.arange(21) + 1) % 3),
        r"output 'logits' of shifted_labels\.onnx \(3 scores per image\) gets 0 of the 21 --data images right "
        r"\(0\.00%\), no better than chance for 3 classes \(33\.33%\).*Check that the labels are the model's class "
        r"indices",
    ),
}


@pytest.mark.parametrize("case", REFUSED_SCORES)
def test_scores_that_cannot_be_a_classifiers_are_refused_at_open(case, tmp_path, capsys) -> None:
    name, make_model, make_data, message = REFUSED_SCORES[case]
    model, data, out = make_model(tmp_path / name), make_data(tmp_path / "x.npz"), tmp_path / "report"
    status, text = ptq_run(capsys, "--onnx", model, "--data", data, "--out", out, "--cache", tmp_path / "cache")
    assert status == 2, text
    assert re.search(message, text), text
    assert "Traceback" not in text and not out.exists()
    assert not list((tmp_path / "cache").rglob("*-onnxruntime-*"))  # refused before any cell was built


# 7. what ONNX Runtime's quantizer or scoring would meet later: refused at open, before any work


def _sequence_output(path: Path) -> Path:
    nodes = (helper.make_node("SequenceConstruct", ["m"], ["scores"]),)
    outputs = (helper.make_tensor_sequence_value_info("scores", TensorProto.FLOAT, ["N", 3]),)
    return _classifier(path, nodes=nodes, outputs=outputs)


def _nan_weight(path: Path) -> Path:
    weights = np.eye(3, dtype=np.float32)
    weights[1, 2] = np.nan
    nodes = (helper.make_node("MatMul", ["m", "dense.weight"], ["y"]),)
    outputs = (helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),)
    return _classifier(path, nodes=nodes, outputs=outputs, inits=(numpy_helper.from_array(weights, "dense.weight"),))


def _reshape_to_batch_2(path: Path) -> Path:
    """The scores reshaped to the export's batch of 2: it answers a 2-image probe, and fails on any other batch."""
    nodes = (helper.make_node("Reshape", ["m", "batch_of_2"], ["y"]),)
    outputs = (helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),)
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "batch_of_2")
    return _classifier(path, nodes=nodes, outputs=outputs, inits=(shape,))


def _offsets_for_2_images(path: Path) -> Path:
    """A per-image offset exported for a batch of 2 (gathered by row, then added): it answers batches of 1 and 2
    and fails on scoring's batch of 64."""
    nodes = (
        helper.make_node("Shape", ["m"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Range", ["zero", "n", "one"], ["rows"]),
        helper.make_node("Gather", ["offsets", "rows"], ["offset"], axis=0),
        helper.make_node("Add", ["m", "offset"], ["y"]),
    )
    inits = (
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.zeros((2, 3), np.float32), "offsets"),
    )
    outputs = (helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),)
    return _classifier(path, nodes=nodes, outputs=outputs, inits=inits)


# case: (model maker, number of images, message)
REFUSED_MODELS = {
    "a sequence output": (
        _sequence_output,
        21,
        r"--onnx \S+m\.onnx: output 'scores' \(a sequence\) is not a tensor: ptq run reads \(N, classes\) scores "
        r"from one tensor output\. Export the model so that it returns the scores tensor itself",
    ),
    "a NaN weight": (
        _nan_weight,
        21,
        r"--onnx \S+m\.onnx: initializer 'dense\.weight' \(3, 3\) holds 1 NaN and 0 infinite values \(the first at "
        r"flat index 5\): .*Export the model from a checkpoint whose weights are all finite",
    ),
    "a reshape to the export's batch of 2": (
        _reshape_to_batch_2,
        21,
        r"answers a batch of 2 images but fails on a batch of 1 \(Fail: .*requested shape:\{2,3\}\): calibration "
        r"and scoring run batches of 1 to 64 images",
    ),
    "per-image offsets for a batch of 2": (
        _offsets_for_2_images,
        66,
        r"answers a batch of 2 images but fails on a batch of 64 \(Fail: .*Attempting to broadcast an axis by a "
        r"dimension other than 1\. 2 by 64\)",
    ),
}


@pytest.mark.parametrize("command", ["run", "tune"])
@pytest.mark.parametrize("case", REFUSED_MODELS)
def test_a_model_the_quantizers_or_runtimes_would_fail_on_is_refused_at_open(case, command, tmp_path, capsys):
    make_model, n, message = REFUSED_MODELS[case]
    model, data = make_model(tmp_path / "m.onnx"), _images(tmp_path / "x.npz", n)
    out, cache = tmp_path / "o", tmp_path / "c"
    argv = {
        "run": ["run", "--onnx", model, "--data", data, "--cache", cache, "--cells", CELL, "--out", out],
        "tune": ["tune", "--onnx", model, "--data", data, "--calibration", data, "--cache", cache, "--max-drop", "1",
                 "--out", out],
    }[command]  # fmt: skip
    status, text = _status(argv, capsys)
    assert status == 2, text
    assert re.search(message, text), text
    assert "Traceback" not in text and "[E:onnxruntime" not in text
    assert not out.exists() and not cache.exists()  # before any work


# 8. an interrupted run leaves no process and no temporary folder behind


def _deep(path: Path, convs: int) -> Path:
    """``convs`` 1x1 convolutions near the identity, then `_classifier`'s mean per channel: as accurate, and slow
    to quantize (ONNX Runtime pre-processes, calibrates and quantizes node by node) but fast to score."""
    rng = np.random.default_rng(0)
    weights = [(np.eye(3) + rng.normal(0, 0.01, (3, 3))).astype(np.float32).reshape(3, 3, 1, 1) for _ in range(convs)]
    names = ["x", *(f"c{i}" for i in range(convs))]
    graph = helper.make_graph(
        [helper.make_node("Conv", [names[i], f"w{i}"], [names[i + 1]], name=f"conv{i}") for i in range(convs)]
        + [helper.make_node("ReduceMean", [names[-1]], ["y"], keepdims=0, axes=[2, 3])],
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    return _model(path, graph)


def _children(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid``: its command line."""
    found: dict[int, str] = {}
    parents = {pid}
    while parents:
        children = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) in parents and fields[0] != "Z":
                    children.add(int(stat.parent.name))
                    found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError, ValueError):
                continue
        parents = children - parents
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return False


def _work_folders(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if "ptq_ort" in p.name or p.name.endswith(".tmp")]


@pytest.mark.e2e  # a real `ptq run --jobs 2` in its own process, killed: 4 s each
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_parallel_run_killed_while_building_leaves_no_worker_and_no_work_folder(signum, tmp_path, capsys) -> None:
    """Its spawn workers used to be orphaned (PPID 1) and build on for a minute; ONNX Runtime's work folders
    (pre-processed and augmented models) stayed in /tmp. The workers die with the run; the folders are in the
    cache, named with the PID, and the next run removes those of a dead one."""
    model, data = _deep(tmp_path / "deep.onnx", 300), _images(tmp_path / "x.npz", 30)
    cache, tmp = tmp_path / "c", tmp_path / "t"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTEST_ADDOPTS": ""}
    argv = [sys.executable, "-m", "ptq_core", "run", "--onnx", model, "--data", data, "--cache", cache,
            "--out", tmp_path / "report", "--jobs", "2", "--cells", "onnxruntime-u8s8-minmax-*"]  # fmt: skip
    log = (tmp_path / "run.log").open("w")  # not a pipe: an orphaned worker would hold it open
    run = subprocess.Popen([str(a) for a in argv], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    workers: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            workers = _children(run.pid)
            if sum("spawn_main" in line for line in workers.values()) == 2 and _work_folders(cache, tmp):
                break  # both workers are up and one is inside ONNX Runtime's quantizer
            time.sleep(0.1)
        assert run.poll() is None and sum("spawn_main" in line for line in workers.values()) == 2, workers
        os.kill(run.pid, signum)
        status = run.wait(30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        survivors = {pid: line for pid, line in workers.items() if _alive(pid)}
    finally:  # whatever the outcome, nothing of this run outlives the test
        for pid, line in {**workers, **_children(run.pid)}.items():
            with contextlib.suppress(OSError):  # gone already
                if _alive(pid) and Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() == line:
                    os.kill(pid, signal.SIGKILL)  # this run's process, not one that took its PID since
        with contextlib.suppress(ProcessLookupError):
            os.kill(run.pid, signal.SIGKILL)
        run.wait()
        log.close()
    assert not survivors, f"still running 5 s after the run was killed: {survivors}"
    assert status == (128 + signal.SIGTERM if signum == signal.SIGTERM else -signal.SIGKILL)  # it stopped them
    assert not (tmp_path / "report").exists()
    # the next run on this cache (another model: it builds nothing here) removes what the killed one left
    status, text = ptq_run(capsys, *_args({"onnx": _tiny_onnx(tmp_path / "next.onnx"), "data": _balanced(
        tmp_path / "next.npz"), "cache": cache}, tmp_path / "next-report"))  # fmt: skip
    assert status in (0, 1), text
    assert not _work_folders(cache, tmp)


# 9. messages in the terms of the command that was run


def test_a_cache_error_names_the_option_that_chose_the_cache(tmp_path, capsys, monkeypatch) -> None:
    """Cache errors named PTQ_MODELS_DIR, which ptq run does not read."""
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    model, data = _tiny_onnx(tmp_path / "cached.onnx"), _balanced(tmp_path / "x.npz")
    status, text = ptq_run(capsys, *_args({"onnx": model, "data": data, "cache": blocker}, tmp_path / "out"))
    assert status == 2 and f"cannot write to {blocker}/cached-" in text, text
    assert "make it writable, or choose a writable folder with --cache DIR" in text and "PTQ_MODELS_DIR" not in text

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTEST_ADDOPTS", "")
    plugin = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--co", "--ptq-onnx", str(model), "--ptq-data",
              str(data), "--ptq-cache", str(blocker / "sub")]  # fmt: skip
    assert pytest.main(plugin) == pytest.ExitCode.USAGE_ERROR
    text = capsys.readouterr().err
    assert "choose a writable folder with --ptq-cache DIR" in text and "PTQ_MODELS_DIR" not in text, text


@pytest.mark.xdist_group("hostile-first-run")  # one ptq run, shared
@no_held_out
def test_a_quantized_file_larger_than_its_fp32_is_reported_larger(first_run) -> None:
    """It was "1.00x smaller" (the 8-bit file of a model with no weights gains its Q/DQ nodes)."""
    from ptq_core import render
    from ptq_core.tune import report as tune_report

    _, out = first_run
    results = json.loads((out / "results.json").read_text())
    (row,) = results["cells"]
    assert row["file_ratio"] < 1  # measured: the tiny model has no weight to shrink, only Q/DQ nodes to gain
    text = render.markdown(results)
    assert f"{1 / row['file_ratio']:.2f}x larger file." in text and "x smaller" not in text
    pick = {"candidate": "c", "test_wilson_95": [0.5, 0.7], "vs_ort_fp32": 1.2, "test_accuracy": 0.6,
            "test_fp32_accuracy": 0.6, "runtime": "onnxruntime", "test_mcnemar_p": 1.0, "test_mcnemar_fp32_only": 0,
            "test_mcnemar_candidate_only": 0, "size_ratio": 0.8, "validation_drop_points": 0.0}  # fmt: skip
    nncf = {**pick, "candidate": "n", "size_ratio": 3.1, "tune_seconds": 1.0}
    result = {"chosen": pick, "nncf_accuracy_control": nncf, "wall_seconds": 1.0, "stopped": False, "candidates": []}
    text = tune_report.markdown(result)
    assert "1.25x larger file;" in text and "| 1.25x larger |" in text and "| 3.10x smaller |" in text
