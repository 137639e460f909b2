"""``ptq run --shard K/N`` on N machines, joined by ``ptq report --merge``, gives the single run's report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptq_core import cli
from tests.test_failures_are_results import tiny_classifier, tiny_data

CELLS = ("onnxruntime-u8s8-minmax-*", "onnxruntime-int8-minmax-per_channel")  # 3 cells: shards of 2 and 1


@pytest.fixture
def run_args(tmp_path: Path, ws) -> list[str]:
    model, data = tiny_classifier(tmp_path / "tiny.onnx"), tiny_data(tmp_path / "data.npz")
    return ["run", "--onnx", str(model), "--data", str(data), "--samples", "60",
            "--cache", str(ws.models_dir / "run-shards"), "--cells", *CELLS]  # fmt: skip


def test_two_shards_merge_into_the_single_runs_report_cell_by_cell(run_args, tmp_path: Path, capsys) -> None:
    single = cli.main([*run_args, "--out", str(tmp_path / "single")])
    statuses = [cli.main([*run_args, "--out", str(tmp_path / f"part{k}"), "--shard", f"{k}/2"]) for k in (1, 2)]
    assert max(statuses) == single  # a failure in either shard is the single run's failure
    parts = [json.loads((tmp_path / f"part{k}" / "results.json").read_text()) for k in (1, 2)]
    assert [len(p["cells"]) for p in parts] == [2, 1] and [p["shard"] for p in parts] == [
        {"index": 1, "of": 2},
        {"index": 2, "of": 2},
    ]
    assert cli.main(["report", "--merge", str(tmp_path / "part2"), str(tmp_path / "part1"), "--out",
                     str(tmp_path / "merged")]) == single  # fmt: skip
    whole = json.loads((tmp_path / "single" / "results.json").read_text())
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert [r["cell"] for r in merged["cells"]] == [r["cell"] for r in whole["cells"]]
    for mine, theirs in zip(merged["cells"], whole["cells"], strict=True):
        assert mine == theirs, mine["cell"]
    for key in ("checks", "failed_builds", "failed_evaluations", "run", "models", "calibration"):
        assert merged[key] == whole[key], key
    assert {k: v for k, v in merged.items() if k != "shards"} == whole


def test_a_shard_past_the_cells_or_outside_1_to_n_is_refused_before_any_work(run_args, tmp_path: Path, capsys):
    for shard, message in (("3/2", "1 <= K <= N"), ("0/2", "1 <= K <= N"), ("1-2", "give K/N"), ("4/4", "fewer cells")):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*run_args, "--out", str(tmp_path / "out"), "--shard", shard])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, shard
    assert not (tmp_path / "out").exists()


def test_a_shard_given_twice_or_missing_is_not_merged(run_args, tmp_path: Path, capsys) -> None:
    cli.main([*run_args, "--out", str(tmp_path / "part1"), "--shard", "1/2"])
    for folders in ([tmp_path / "part1", tmp_path / "part1"], [tmp_path / "part1"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["report", "--merge", *map(str, folders), "--out", str(tmp_path / "merged")])
        assert exit_.value.code == 2 and "give every shard's folder once" in capsys.readouterr().err
