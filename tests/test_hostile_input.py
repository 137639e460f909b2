"""``ptq run``, ``ptq tune --onnx`` and the pytest plugin given what a fuzzer (or a hurried user) gives them.

Each refused input exits 2 before any model is built, with a message that names the option or file and
the fix, never a traceback; what is accepted is reported truthfully (no wrapped class ids, no NaN in a
JSON file), and no folder the tool did not write is ever replaced. Tiny models and data, built here.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
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
    """``n`` images, as many of each of the tiny model's 3 classes: the default --samples 200 takes all."""
    return _data(path, np.random.default_rng(1).random((n, 3, 32, 32), dtype=np.float32), np.arange(n) % 3)


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
    (cached,) = (store.models_dir / "predictions").glob("*.npy")
    assert np.load(cached).dtype == np.uint16


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
    "a directory as --data": (None, lambda d: d, (), r"--data \S+ is a directory: pass an \.npz file"),
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
