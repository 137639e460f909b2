"""`ptq tune`: the protocol keeps the three image sets apart, the choice is the fastest (or smallest) candidate
within the drop, an impossible drop ends with exit 1 and the shortfall, and a second tune builds nothing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptq_core import cli, tune
from ptq_core.cache import BUILD_LOG
from ptq_core.calibration import CalibrationConfig, stratified_indices
from ptq_core.errors import PTQError
from ptq_core.matrix import Cell
from ptq_core.sources import file_digest
from ptq_core.tune.candidates import cell_candidates
from ptq_core.tune.protocol import Protocol
from ptq_core.tune.search import Row
from tests.test_failures_are_results import tiny_classifier, tiny_data


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(200, 2000),
    calib=st.integers(10, 50),
    size=st.integers(10, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_validation_images_are_stratified_and_never_calibration_images(n, calib, size, seed) -> None:
    labels = np.arange(n) % 10
    calibration = stratified_indices(labels, calib, seed)
    val = tune.validation_indices(labels, calibration, size, seed)
    assert len(np.intersect1d(val, calibration)) == 0 and len(np.unique(val)) == size == len(val)
    counts = np.bincount(labels[val], minlength=10)
    assert counts.max() - counts.min() <= 1


def _row(name: str, drop: float, speed: float | None, size: int, accuracy: float) -> Row:
    return Row(name, "cell", "onnxruntime", f"{name}.onnx", size, accuracy, drop, vs_ort_fp32=speed)


# a small search space whose answer is known: c is the fastest within 0.3, e the smallest, f is dominated by c
ROWS = [
    _row("a", 0.9, 3.5, 90, 0.80),
    _row("b", 0.2, 2.0, 100, 0.87),
    _row("c", 0.3, 2.6, 120, 0.86),
    _row("d", -0.1, None, 110, 0.90),  # never timed
    _row("e", 0.1, 1.2, 95, 0.88),
    _row("f", 0.4, 2.5, 130, 0.85),
]
AS_FAST = _row("g", 0.1, 2.55, 125, 0.87)  # within 5 % of c's speed and closer to FP32: a tie it wins
GAINS = _row("h", -0.2, 2.58, 125, 0.89)  # as fast, but further from FP32 than g, if on the bright side


def test_the_choice_is_the_fastest_candidate_within_the_drop() -> None:
    def chosen(rows: list[Row], max_drop: float, objective: str = "speed") -> str | None:
        row = tune.choose(rows, max_drop, objective)
        return None if row is None else row.candidate

    assert chosen(ROWS, 0.3) == "c"  # a is faster but 0.9 points down; d was never timed
    assert chosen(ROWS, 0.3, "size") == "e"
    assert chosen(ROWS, 0.05) is None
    assert chosen([*ROWS, AS_FAST], 0.3) == "g"
    assert chosen([*ROWS, AS_FAST, GAINS], 0.3) == "g"
    assert chosen([*ROWS, GAINS], 0.3) == "h"  # closer to FP32 than c
    assert {r.candidate for r in tune.pareto(ROWS)} == {"a", "b", "c", "e"}


@pytest.mark.parametrize(
    "configs",
    [
        (CalibrationConfig(200), CalibrationConfig(1000)),
        (CalibrationConfig(500), CalibrationConfig(1000)),
        (CalibrationConfig(200, 42, "calibration"),),  # a user's one set
    ],
    ids=["200-1000", "500-1000", "user"],
)
def test_entropy_cells_are_searched_on_the_first_calibration_set_only(configs) -> None:
    store = SimpleNamespace(quantized=lambda cell, config: Path(cell.artifact_name))
    cells = tuple(Cell("onnxruntime", "uint8", calibrator, "per_tensor") for calibrator in ("entropy", "minmax"))
    protocol = Protocol("train", configs, np.arange(0), np.arange(0), np.arange(0))
    found = {(c.cell.calibrator, c.calibration) for c in cell_candidates(store, cells, protocol, ())}
    assert found == {("entropy", configs[0])} | {("minmax", c) for c in configs}


def test_a_calibrator_variant_changes_only_settings_its_calibrator_has() -> None:
    from ptq_core.backends import onnxruntime as ort

    for calibrator, variants in ort.CALIBRATOR_VARIANTS.items():
        for options in variants:
            assert ort.calibrator_settings(calibrator, options) == {**ort.CALIBRATOR_OPTIONS[calibrator], **options}
    with pytest.raises(PTQError, match="entropy calibrator option 'percentile': choose among num_bins, num_quantized"):
        ort.calibrator_settings("entropy", {"percentile": 99.9})


@pytest.mark.parametrize("sizes", [("200", "500"), ("200", "1000")], ids=["other", "the defaults typed"])
def test_a_user_model_refuses_calibration_sizes_it_has_no_set_of(sizes, tmp_path: Path, capsys) -> None:
    args = ["tune", "--onnx", tiny_classifier(tmp_path / "tiny.onnx"), "--data", tiny_data(tmp_path / "data.npz"),
            "--calibration", tiny_data(tmp_path / "calibration.npz", n=600), "--cache", tmp_path / "cache",
            "--max-drop", "3", "--calibration-samples", *sizes, "--out", tmp_path / "out"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in args])
    message = f"--calibration-samples {' '.join(sizes)}: ptq tune --onnx calibrates every cell on one set, 200"
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _tune(capsys, out: Path, *args: str) -> tuple[int, str]:
    try:
        status = cli.main(["tune", "--out", str(out), "--validation", "1000", *args])
    except SystemExit as exc:
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@pytest.mark.e2e
@pytest.mark.slow
def test_a_short_real_tune_chooses_and_scores_the_test_split_once(ws, tmp_path: Path, capsys) -> None:
    status, text = _tune(capsys, tmp_path / "a", "--max-drop", "1.0", "--cells", "onnxruntime-u8s8-minmax-*")
    assert status == 0, text
    result = json.loads((tmp_path / "a" / "tune.json").read_text())
    chosen = result["chosen"]
    assert chosen["validation_drop_points"] <= 1.0 and chosen["vs_ort_fp32"] > 1.0
    assert 0.8 < chosen["test_accuracy"] < 0.9 and 0 <= chosen["test_mcnemar_p"] <= 1
    assert (tmp_path / "a" / Path(chosen["artifact"]).name).is_file() and (tmp_path / "a" / "tune.png").is_file()
    protocol = result["protocol"]
    assert protocol["validation"]["images"] == 1000 and protocol["test"]["split"] == "test"
    assert [c["images"] for c in protocol["calibration"]] == [200, 1000]
    calibrated = np.concatenate([ws.calibration(CalibrationConfig(num_samples=n)).indices for n in (200, 1000)])
    val = tune.validation_indices(ws.split("train").labels, np.unique(calibrated), 1000, tune.VALIDATION_SEED)
    assert tune.digest(val) == protocol["validation"]["indices_sha256"]  # the recorded set, disjoint from both
    assert {r["calibration_images"] for r in result["candidates"]} == {200, 1000}
    for r in result["candidates"]:  # each image gained or lost against FP32 is a changed prediction
        assert r["validation_changed"] >= abs(round(r["validation_drop_points"] * 1000 / 100)), r["candidate"]
    duel = result["head_to_head"]  # the chosen model against NNCF's, in rounds of their own
    assert duel["rounds"] == tune.HEAD_TO_HEAD_ROUNDS and 0 <= duel["rounds_faster"] <= duel["rounds"]
    assert 0.5 < duel["vs_nncf_accuracy_control"] < 2 and "Head to head" in (tmp_path / "a" / "tune.md").read_text()

    log = ws.models_dir / BUILD_LOG
    before = log.read_text()
    status, _ = _tune(capsys, tmp_path / "b", "--max-drop", "1.0", "--cells", "onnxruntime-u8s8-minmax-*")
    # every candidate and prediction (named after its model) came from the cache; other workers may build others
    names = {Path(r["artifact"]).name for r in [*result["candidates"], result["nncf_accuracy_control"]]}
    names |= {"resnet8.onnx", "resnet8.pt2"}  # the FP32 models
    built = log.read_text()[len(before) :].splitlines()
    assert status == 0 and not [line for line in built if any(name in line for name in names)]


@pytest.mark.e2e
@pytest.mark.slow
def test_an_impossible_drop_exits_1_with_the_best_found_and_its_shortfall(tmp_path: Path, capsys) -> None:
    status, text = _tune(capsys, tmp_path, "--max-drop", "0.05", "--cells", "onnxruntime-uint8-entropy-per_tensor")
    assert status == 1, text
    result = json.loads((tmp_path / "tune.json").read_text())
    assert "chosen" not in result and result["shortfall_points"] > 0
    assert "No candidate holds 0.05 points" in (tmp_path / "tune.md").read_text()
    # the entropy cell is searched with a coarser histogram too: another calibration, so another model
    variant = next(r for r in result["candidates"] if r["calibrator_options"])
    assert variant["calibrator_options"] == {"num_bins": 1024} and "[num_bins 1024]" in variant["candidate"]
    cell = next(r for r in result["candidates"] if not r["calibrator_options"] and r["runtime"] == variant["runtime"])
    assert file_digest(Path(variant["artifact"])) != file_digest(Path(cell["artifact"]))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    ("cell", "fmt", "runtime"),
    [
        ("onnxruntime-u8s8-minmax-per_channel", "onnx", "onnxruntime"),
        ("pytorch-uint8-minmax-per_channel", "pt2", "inductor"),
    ],
)
def test_mixed_precision_leaves_the_most_sensitive_layers_in_float_until_the_drop_holds(
    cell, fmt, runtime, tmp_path: Path, capsys
) -> None:
    from ptq_core.formats import FORMATS

    status, text = _tune(capsys, tmp_path, "--max-drop", "0", "--cells", cell, "--calibration-samples", "200")
    result = json.loads((tmp_path / "tune.json").read_text())
    mixed = [r for r in result["candidates"] if r["float_layers"]]
    base = next(r for r in result["candidates"] if not r["float_layers"] and r["runtime"] == runtime)
    assert base["validation_drop_points"] > 0, f"the {cell} cell lost nothing on these images: nothing to revert"
    assert [len(r["float_layers"]) for r in mixed] == list(range(1, len(mixed) + 1))  # one more layer each time
    for r in mixed:
        assert r["runtime"] == runtime and r["cell"] == base["cell"]
        found = FORMATS[fmt].inspect(Path(r["artifact"]))
        assert found.quantized_weight_ops == found.weight_ops - len(r["float_layers"]), r["candidate"]
        assert r["float_layers"][: len(mixed[0]["float_layers"])] == mixed[0]["float_layers"]  # ranked once
    last = mixed[-1]
    assert last["validation_drop_points"] <= 0 or len(last["float_layers"]) == 10  # held, or every layer is float
    assert status == (0 if "chosen" in result else 1), text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-drop", "0.3", "--cells", "tflite-*"), "matches no searched cell of resnet8"),
        (("--max-drop", "0.3", "--cells", "pytorch-int8-*"), "matches no searched cell of resnet8"),
        (("--max-drop", "0.3", "--cells", "onnxruntime-u8s8-distribution-*"), "is a known accuracy failure"),
        (("--max-drop", "0.3", "--validation", "5"), "--validation 5: give between 10"),
        (("--max-drop", "-1"), "--max-drop -1: give the accuracy drop"),
        (("--max-drop", "0.3", "--budget", "0"), "--budget 0: give the minutes"),
        (("--max-drop", "0.3", "--calibration-samples", "200", "5"), "--calibration-samples 5: give between 10"),
    ],
)
def test_bad_tune_input_exits_2_naming_the_option(args, message, tmp_path: Path, capsys) -> None:
    try:
        status = cli.main(["tune", "--out", str(tmp_path / "out"), *args])
    except SystemExit as exc:
        status = int(exc.code or 0)
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_is_not_a_tune_output_is_refused_before_the_search(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    models = tmp_path / "models"
    with pytest.raises(SystemExit) as exc:
        cli.main(["tune", "--max-drop", "0.3", "--out", str(out), "--models-dir", str(models)])
    assert exc.value.code == 2 and "is not an output folder of this command" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and not models.exists()  # nothing searched or built
