"""The command line: help that teaches, exit code 2 with the valid choices for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ptq_core.cli import main


def test_help_lists_every_subcommand_with_an_example(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for command in ("prepare", "quantize", "evaluate", "report"):
        assert f"python -m ptq_core {command}" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["quantize", "--backend", "tflite", "--dtype", "int8"], "invalid choice: 'tflite'"),
        (
            ["quantize", "--framework", "pytorch", "--dtype", "u8s8"],
            "unknown pytorch dtype 'u8s8': choose one of uint8, int8",
        ),
        (
            ["quantize", "--framework", "onnxruntime", "--dtype", "int8", "--calibrator", "histogram"],
            "choose one of minmax, entropy, percentile, distribution",
        ),
        (
            ["quantize", "--framework", "onnxruntime", "--dtype", "int8", "--samples", "0"],
            "num_samples must be an integer >= 10",
        ),
        (
            ["quantize", "--framework", "onnxruntime", "--dtype", "int8", "--samples", "-3"],
            "num_samples must be an integer >= 10",
        ),
        (
            ["quantize", "--framework", "onnxruntime", "--dtype", "int8", "--samples", "50010"],
            "use at most 50000 samples",
        ),
    ],
)
def test_bad_option_exits_2_with_the_choices(argv, message, capsys, ws) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--cifar10-dir", str(ws.cifar10_dir), "--models-dir", str(ws.models_dir)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_model_that_is_not_a_model_exits_2(tmp_path, capsys, ws) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00garbage")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(bogus), "--cifar10-dir", str(ws.cifar10_dir)])
    assert exit_info.value.code == 2
    assert f"--model {bogus} failed to load: onnxruntime: InvalidProtobuf" in capsys.readouterr().err


@pytest.mark.e2e
def test_evaluate_json_in_a_fresh_process(fp32_onnx, ws, evaluated) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptq_core",
            "evaluate",
            "--model",
            str(fp32_onnx),
            "--json",
            "--cifar10-dir",
            str(ws.cifar10_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)
    assert set(result) == {"model", "accuracy", "correct", "total", "per_class_accuracy"}
    assert (result["correct"], result["total"]) == (evaluated(fp32_onnx).correct, 10_000)
    assert len(result["per_class_accuracy"]) == 10


def test_unwritable_out_exits_2_and_leaves_nothing(tmp_path, capsys, ws) -> None:
    out = tmp_path / "missing-folder" / "model.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", "--backend", "onnxruntime", "--out", str(out), "--models-dir", str(ws.models_dir)])
    assert exit_info.value.code == 2
    assert "cannot write --out" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_out_with_the_wrong_suffix_exits_2_naming_the_right_one(tmp_path, capsys, ws) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["quantize", "--backend", "pytorch", "--out", str(tmp_path / "m.onnx"), "--models-dir", str(ws.models_dir)]
        )
    assert exit_info.value.code == 2
    assert "pytorch writes .pt2 files, name it e.g. m.pt2" in capsys.readouterr().err


def test_compare_prints_each_shared_subjects_flips(tmp_path, capsys, ws, test_split) -> None:
    from ptq_core import baselines

    labels = test_split.labels
    new = labels.copy()
    new[:3] = (new[:3] + 1) % 10
    for stack, predictions in (("old", labels), ("new", new)):
        data = baselines.record(int((predictions == labels).sum()), 1.0, stack)
        baselines.write(tmp_path / stack, "resnet8-cell-on-rt", data, predictions)
    main(["compare", str(tmp_path / "old"), str(tmp_path / "new"), "--cifar10-dir", str(ws.cifar10_dir)])
    assert "| resnet8-cell-on-rt | 10000 | 9997 | 3 | 3 | 0 |" in capsys.readouterr().out


def test_compare_of_a_missing_folder_exits_2(tmp_path, capsys, ws) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(tmp_path / "nope"), str(tmp_path), "--cifar10-dir", str(ws.cifar10_dir)])
    assert exit_info.value.code == 2
    assert "is not a baseline folder" in capsys.readouterr().err


def test_ptq_exits_with_the_status_main_returned(monkeypatch) -> None:
    from ptq_core import cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 1)
    monkeypatch.setattr(cli.gc, "freeze", lambda: calls.append("freeze"))  # not this worker's heap
    with pytest.raises(SystemExit) as exit_info:
        cli.console()
    assert exit_info.value.code == 1 and calls == ["main", "freeze"]
