"""``ptq run`` and the pytest plugin on a user's ONNX classifier, handed over as a user would.

The model is MobileNetV1 exported as a plain ONNX file that takes NCHW float images scaled to [0, 1] and
answers logits: nothing like the NHWC raw-pixel, softmax models the suite registers. Its data are the
10,000 real test images in that layout; random arrays only feed the bad-input tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_models
import pytest
from onnx import TensorProto, helper

from ptq_core import cli
from ptq_core.formats import FORMATS
from ptq_core.models import MODELS

pytestmark = pytest.mark.slow

# each ONNX backend's default configuration; per tensor, as MobileNetV1's per-channel u8s8 cell loses 5.44 points
# on an AVX2 CPU without VNNI (ORT's u8s8 kernels saturate there: a known failure of the suite's own MobileNetV1,
# and a real failure of a user's model, which these tests are not about)
CELLS = ("onnxruntime-u8s8-minmax-per_tensor", "nncf-performance-fast_bias_correction-*")


@pytest.fixture(scope="session")
def user_files(ws, test_split) -> dict[str, Path]:
    """MobileNetV1 as `mobilenet_nchw.onnx` (NCHW, [0, 1], logits) and the test split as DATA.npz in that
    layout, built once into the models folder (xdist workers and later runs share them)."""
    from ptq_core import cache
    from ptq_core.cifar10 import TEST_DATA_SHA256
    from ptq_core.mobilenet import WEIGHTS_SHA256

    folder = ws.models_dir / "user-fixture"
    recipe = {"recipe": "MobileNetV1, NCHW float in [0, 1], logits, dynamic batch", "test": Path(__file__).name}

    def export(tmp: Path) -> None:
        import torch

        from ptq_core.mobilenet import load_weights

        class NCHWLogits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = load_weights()

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net.logits(x.permute(0, 2, 3, 1) * 255.0)

        torch.onnx.export(
            NCHWLogits().eval(),
            (torch.rand(2, 3, 32, 32),),
            str(tmp),
            dynamo=True,
            external_data=False,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )

    def save_data(tmp: Path) -> None:
        nchw = (test_split.images.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
        with open(tmp, "wb") as f:
            np.savez(f, images=nchw, labels=test_split.labels)

    versions = cache.library_versions(("torch", "onnxscript", "onnx"))
    onnx_path = cache.build_once(
        folder / "mobilenet_nchw.onnx", {**recipe, "weights": WEIGHTS_SHA256, "versions": versions}, export
    )
    data = cache.build_once(folder / "data.npz", {**recipe, "data": TEST_DATA_SHA256}, save_data)
    return {"onnx": onnx_path, "data": data}


@pytest.fixture(scope="session")
def calib_npz(ws, tmp_path_factory) -> Path:
    train = ws.split("train")
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, images=(train.images[:1000].transpose(0, 3, 1, 2) / 255.0).astype(np.float32))  # no labels
    return path


@pytest.fixture(scope="session")
def labelled_calib_npz(ws, tmp_path_factory) -> Path:
    train = ws.split("train")
    path = tmp_path_factory.mktemp("calib") / "labelled.npz"
    images = (train.images[:3000].transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    np.savez(path, images=images, labels=train.labels[:3000])
    return path


@pytest.fixture(scope="session")
def run_cache(ws) -> Path:
    return ws.models_dir / "run"  # keyed like every artifact: shared by workers and runs


def ptq_run(capsys, *args: object) -> tuple[int, str]:
    try:
        status = cli.main(["run", *map(str, args)])
    except SystemExit as exc:  # argparse / PTQError exits
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@pytest.fixture(scope="session")
def default_run(user_files, run_cache, tmp_path_factory) -> tuple[int, str, Path]:
    out = tmp_path_factory.mktemp("reports") / "mobilenet_nchw"
    args = ["--onnx", user_files["onnx"], "--data", user_files["data"], "--out", out, "--cache", run_cache]
    status = cli.main(["run", *map(str, args), "--cells", *CELLS])
    return status, "", out


@pytest.mark.e2e
def test_run_on_a_user_model_writes_the_report_schema_with_8bit_artifacts(default_run) -> None:
    status, _, out = default_run
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    # the same weights as the registered MobileNetV1, so the same accuracy up to x/255*255 rounding
    # (measured: 8614 both); a wrong layout or scale would land far away
    assert abs(results["fp32"]["correct"] - MODELS["mobilenetv1"].reference_correct) <= 10
    assert results["fp32"]["accuracy"] == results["fp32"]["correct"] / 10_000
    assert {r["backend"] for r in results["cells"]} == {"onnxruntime", "nncf"}
    for row in results["cells"]:
        assert 0 <= row["accuracy"] <= 1 and row["correct"] == round(row["accuracy"] * 10_000)
        artifact = out / row["artifact"]
        found = FORMATS["onnx"].inspect(artifact)
        assert found.weight_ops == found.quantized_weight_ops == 20, row["cell"]  # 19 convs + the classifier
        assert row["delta_points"] >= -3.0
    assert not [c for c in results["checks"] if not c["passed"]]
    assert list(out.parent.iterdir()) == [out]  # no temporary folder left beside it


@pytest.mark.e2e
def test_calibrating_from_the_scored_images_is_said_and_held_out_accuracy_given(default_run, user_files) -> None:
    import hashlib

    from ptq_core.adapters import onnxruntime_session
    from ptq_core.calibration import stratified_indices

    _, _, out = default_run
    results = json.loads((out / "results.json").read_text())
    assert results["calibration"]["split"] == "data"
    text = (out / "results.md").read_text()
    assert "these images also score the model" in text and "| held-out |" in text
    data = np.load(user_files["data"])
    calibrated = stratified_indices(data["labels"], 200, 42)  # --samples 200, seed 42: the images it recorded
    assert hashlib.sha256(calibrated.tobytes()).hexdigest() == results["calibration"]["indices_sha256"]
    session = onnxruntime_session(user_files["onnx"])
    scores = session.run(None, {session.get_inputs()[0].name: data["images"][calibrated]})[0]
    right = int((scores.argmax(axis=1) == data["labels"][calibrated]).sum())
    # FP32's accuracy on the 9,800 images that did not calibrate: its correct answers less those on the 200
    assert results["fp32"]["heldout_accuracy"] == (results["fp32"]["correct"] - right) / 9_800


@pytest.mark.e2e
def test_a_calibration_file_without_labels_calibrates_apart(user_files, calib_npz, run_cache, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    status, text = ptq_run(
        capsys, "--onnx", user_files["onnx"], "--data", user_files["data"], "--calibration", calib_npz,
        "--out", out, "--cache", run_cache, "--cells", "onnxruntime-u8s8-minmax-per_tensor",
    )  # fmt: skip
    assert status == 0, text
    results = json.loads((out / "results.json").read_text())
    assert results["calibration"]["split"] == "calibration"
    assert results["run"]["checks_not_run"] == {
        "check_calibration_stratified": f"{calib_npz} has no labels to stratify by"
    }
    assert "apart from the scored data" in (out / "results.md").read_text()


@pytest.mark.e2e
def test_a_cell_beyond_max_drop_exits_1_naming_it(user_files, default_run, run_cache, tmp_path, capsys) -> None:
    status, text = ptq_run(
        capsys, "--onnx", user_files["onnx"], "--data", user_files["data"], "--out", tmp_path / "out",
        "--cache", run_cache, "--cells", "onnxruntime-u8s8-minmax-per_tensor", "--max-drop", "0",
    )  # fmt: skip
    assert status == 1
    assert "FAILED check_accuracy_vs_fp32 mobilenet_nchw-onnxruntime-u8s8-minmax-per_tensor on onnxruntime" in text


@pytest.mark.e2e
def test_explain_blames_a_user_models_cell_as_ptq_run_named_and_scored_it(
    default_run, user_files, run_cache, capsys
) -> None:
    _, _, out = default_run
    rows = json.loads((out / "results.json").read_text())["cells"]
    row = next(r for r in rows if r["cell"] == f"mobilenet_nchw-{CELLS[0]}")
    args = ["--model", user_files["onnx"], "--data", user_files["data"], "--cache", run_cache, "--confirm", "0"]
    try:
        status = cli.main(["explain", CELLS[0], *map(str, args)])
    except SystemExit as exc:
        status = int(exc.code or 0)
    printed = capsys.readouterr()
    drop = -row["runtimes"]["onnxruntime"]["delta_points"]
    if drop <= 0:  # the blame needs images the cell lost: a cell as good as FP32 is refused, as ptq run scored it
        assert status == 2 and "it does not drop, so there is nothing to blame" in printed.err, printed.err
        return
    assert not status, printed.err
    assert printed.out.startswith(f"{row['cell']} is {drop:.2f} points below FP32 on onnxruntime"), printed.out
    assert "its output quantization alone has" in printed.out  # measured on the model's own input, pixel_values
    layers = [line.split(" | ")[1] for line in printed.out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(layers[1:]) == 20 and all(name.startswith("node_") for name in layers[1:]), layers  # the exporter's


def test_explain_takes_data_only_with_a_model(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", "resnet8-onnxruntime-u8s8-minmax-per_tensor", "--data", str(_data(tmp_path / "x.npz"))])
    assert exit_.value.code == 2
    assert "--data, --calibration, --cache and --output go with --model MODEL" in capsys.readouterr().err


def test_explain_names_a_user_models_cells_when_one_is_unknown(tmp_path, capsys) -> None:
    model, data = _tiny_onnx(tmp_path / "m.onnx"), _data(tmp_path / "x.npz")
    args = ["--model", model, "--data", data, "--cache", tmp_path / "cache", "--samples", 9]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", "onnxruntime-u8s8-*", *map(str, args)])
    assert exit_.value.code == 2
    assert "m has no cell onnxruntime-u8s8-*: its cells are named like onnxruntime-" in capsys.readouterr().err


def test_explain_refuses_a_model_without_a_layer_to_leave_in_float(tmp_path, capsys) -> None:
    model, data = _tiny_onnx(tmp_path / "m.onnx"), _data(tmp_path / "x.npz")  # a mean per channel: no conv
    args = ["--model", model, "--data", data, "--cache", tmp_path / "cache", "--samples", 9]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", "onnxruntime-u8s8-minmax-per_tensor", *map(str, args)])
    assert exit_.value.code == 2
    assert "its model has no conv or linear layer to leave in float" in capsys.readouterr().err


def _tiny_onnx(path: Path, batch: int | str = "N", reduce_to_2d: bool = True) -> Path:
    """A (batch, 3, 32, 32) -> (batch, 3) model (mean per channel), or (batch, 3, 1, 1) without the flatten."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1, axes=[2, 3])]
    if reduce_to_2d:
        nodes.append(helper.make_node("Flatten", ["m"], ["y"]))
    out_shape = [batch, 3] if reduce_to_2d else [batch, 3, 1, 1]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("y" if reduce_to_2d else "m", TensorProto.FLOAT, out_shape)],
    )
    onnx.save(onnx_models.make_model(graph), str(path))  # not helper.make_model: its IR is too new
    return path


def _data(path: Path, images: np.ndarray | None = None, labels: np.ndarray | None = None, **extra) -> Path:
    rng = np.random.default_rng(0)
    images = rng.random((20, 3, 32, 32), dtype=np.float32) if images is None else images
    labels = np.arange(20) % 3 if labels is None else labels
    np.savez(path, images=images, labels=labels, **extra)
    return path


def _garbage(d: Path) -> Path:
    (d / "m.onnx").write_bytes(b"not a model")
    return d / "m.onnx"


def _unlabelled(d: Path) -> Path:
    np.savez(d / "x.npz", images=np.zeros((20, 3, 32, 32), np.float32))
    return d / "x.npz"


# case: (model maker or None for the tiny model, data maker or None for good random data, expected message)
BAD_INPUTS = {
    "not an onnx file": (_garbage, None, "not a valid ONNX model"),
    "fixed batch": (lambda d: _tiny_onnx(d / "m.onnx", batch=1), None, "fixed batch size of 1: .*dynamic batch"),
    "output not (N, classes)": (
        lambda d: _tiny_onnx(d / "m.onnx", reduce_to_2d=False),
        None,
        r"output 'm' has shape \(2, 3, 1, 1\).*\(N, classes\)",
    ),
    "NHWC images for an NCHW model": (
        None,
        lambda d: _data(d / "x.npz", np.zeros((20, 32, 32, 3), np.float32)),
        "transpose the images to the model's layout",
    ),
    "float64 images": (
        None,
        lambda d: _data(d / "x.npz", np.zeros((20, 3, 32, 32))),
        r"float64.*astype\(np.float32\)",
    ),
    "NaN images": (
        None,
        lambda d: _data(d / "x.npz", np.full((20, 3, 32, 32), np.nan, np.float32)),
        r"61440 NaN or infinite values, in 20 images \(the first is image 0\)",
    ),
    "labels out of range": (
        None,
        lambda d: _data(d / "x.npz", labels=np.arange(20) % 5),
        r"labels run 0..4, but the model answers 3 classes",
    ),
    "fewer labels than images": (
        None,
        lambda d: _data(d / "x.npz", labels=np.zeros(19, int)),
        "20 images but 19 labels",
    ),
    "float labels": (None, lambda d: _data(d / "x.npz", labels=np.zeros(20)), "1-D array of integer class ids"),
    "no labels": (None, _unlabelled, r"has no 'labels' array \(it holds \['images'\]\)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_naming_the_fix_and_writes_nothing(case, tmp_path, capsys) -> None:
    import re

    make_model, make_data, message = BAD_INPUTS[case]
    model = make_model(tmp_path) if make_model else _tiny_onnx(tmp_path / "m.onnx")
    data = make_data(tmp_path) if make_data else _data(tmp_path / "x.npz")
    out = tmp_path / "report"
    status, text = ptq_run(capsys, "--onnx", model, "--data", data, "--out", out, "--cache", tmp_path / "cache")
    assert status == 2
    assert re.search(message, text), text
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_folder_that_is_not_a_run_output_is_never_overwritten(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    status, text = ptq_run(
        capsys, "--onnx", _tiny_onnx(tmp_path / "m.onnx"), "--data", _data(tmp_path / "x.npz"), "--out", out
    )
    assert status == 2 and "is not an output folder of this command" in text
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.e2e
def test_a_failed_write_leaves_the_earlier_report_whole(
    user_files, default_run, run_cache, tmp_path, capsys, monkeypatch
) -> None:
    from ptq_core import render

    out = tmp_path / "out"
    args = ("--onnx", user_files["onnx"], "--data", user_files["data"], "--out", out, "--cache", run_cache,
            "--cells", "onnxruntime-u8s8-minmax-per_tensor")  # fmt: skip
    assert ptq_run(capsys, *args)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def half_written(results, folder):
        (folder / "results.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render, "write", half_written)
    status, text = ptq_run(capsys, *args)
    assert status == 2 and "No space left on device" in text
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.e2e
def test_parallel_builds_give_the_same_artifacts(user_files, run_cache, tmp_path) -> None:
    from ptq_core.run import RunInputs, build
    from ptq_core.sources import file_digest

    cells_wanted = ("onnxruntime-u8s8-minmax-per_channel", "onnxruntime-u8s8-minmax-per_tensor")
    digests = []
    for jobs, cache in ((2, tmp_path / "parallel"), (1, tmp_path / "serial")):
        from ptq_core.run import user_cells

        inputs = RunInputs(user_files["onnx"], user_files["data"], cache_dir=cache)
        cells = user_cells(inputs.open(), cells_wanted)
        lines: list[str] = []
        build(inputs, cells, jobs, lines.append)
        assert len(lines) == 2 and all("built" in line for line in lines)
        digests.append([file_digest(inputs.open().quantized(c)) for c in cells])
    assert digests[0] == digests[1]


@pytest.mark.e2e
def test_the_pytest_plugin_runs_the_checks_from_any_folder(user_files, default_run, run_cache, tmp_path) -> None:
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ptq-onnx", str(user_files["onnx"]),
        "--ptq-data", str(user_files["data"]), "--ptq-cache", str(run_cache),
        "--ptq-cells", "onnxruntime-u8s8-minmax-per_tensor",
    ]  # fmt: skip
    env = {**os.environ, "PYTEST_ADDOPTS": ""}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12 passed" in done.stdout  # 6 checks on the artifact, 3 on each of 2 runtimes
    bad = subprocess.run(
        [*command[:7], str(tmp_path / "missing.onnx"), "--ptq-data", str(user_files["data"])],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 4 and "missing.onnx: no such file" in bad.stderr


@pytest.mark.e2e
def test_tune_on_a_user_model_calibrates_and_validates_on_its_labelled_file(
    user_files, labelled_calib_npz, run_cache, tmp_path, capsys
) -> None:
    from ptq_core import tune
    from ptq_core.run import RunInputs

    out = tmp_path / "tuned"
    args = ["tune", "--onnx", user_files["onnx"], "--data", user_files["data"], "--calibration", labelled_calib_npz,
            "--cache", run_cache, "--max-drop", "1", "--cells", "onnxruntime-u8s8-minmax-*", "--out", out]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0, capsys.readouterr()
    result = json.loads((out / "tune.json").read_text())
    protocol = result["protocol"]
    assert [c["split"] for c in protocol["calibration"]] == ["calibration"] and protocol["test"]["split"] == "data"
    store = RunInputs(user_files["onnx"], user_files["data"], labelled_calib_npz, cache_dir=run_cache).open()
    assert store.pool is not None
    val = tune.validation_indices(store.pool.labels, store.calib.indices, None, tune.VALIDATION_SEED, np.arange(10))
    assert protocol["validation"]["indices_sha256"] == tune.digest(val) and len(val) == 2590  # 259 of each class
    assert not np.intersect1d(val, store.calib.indices).size  # no validation image calibrates
    chosen = result["chosen"]
    assert abs(chosen["test_fp32_accuracy"] - MODELS["mobilenetv1"].reference_correct / 10_000) <= 0.001
    assert chosen["validation_drop_points"] <= 1.0 and chosen["vs_ort_fp32"] > 1.0
    found = FORMATS["onnx"].inspect(out / Path(chosen["artifact"]).name)
    assert found.weight_ops == found.quantized_weight_ops == 20


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        (None, "ptq tune --onnx needs --data DATA.npz"),
        ("unlabelled", "needs --calibration CALIB.npz with `images` and `labels`"),
    ],
)
def test_tune_on_a_user_model_without_labelled_calibration_exits_2(calibration, message, tmp_path, capsys) -> None:
    args = ["tune", "--onnx", _tiny_onnx(tmp_path / "m.onnx"), "--data", _data(tmp_path / "x.npz"), "--max-drop", "1"]
    if calibration:
        unlabelled = tmp_path / "calib.npz"
        np.savez(unlabelled, images=np.load(tmp_path / "x.npz")["images"])
        args += ["--calibration", unlabelled, "--cache", tmp_path / "cache"]
    try:
        status = cli.main([*map(str, args), "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        status = int(exc.code or 0)
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
