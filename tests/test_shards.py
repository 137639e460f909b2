"""Shards: two pytest processes, each with its own cache, merged by `ptq report --merge`, give the report of
one unsharded run of the same tests, cell by cell. Three fresh caches cost ~45 s, so the merge test runs in
its own CI stage (`tox -e shards`, marker `shards`), not in the default run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ptq_core import cli

ROOT = Path(__file__).parents[1]
SUBSET = "resnet8-onnxruntime-u8s8-minmax or resnet8-nncf-performance-fast_bias_correction"


def _pytest(tmp: Path, name: str, splits: int, group: int) -> subprocess.Popen:
    env = {**os.environ, "PTQ_MODELS_DIR": str(tmp / f"{name}-models"), "PYTEST_ADDOPTS": ""}
    env.pop("PYTEST_XDIST_WORKER", None)
    args = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "tests/test_checks.py",
        "-k", SUBSET, "--splits", str(splits), "--group", str(group), "--ptq-report", str(tmp / name),
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.shards
def test_two_shards_merge_into_the_unsharded_report(tmp_path: Path, capsys) -> None:
    runs = {
        "whole": _pytest(tmp_path, "whole", 1, 1),
        "shard1": _pytest(tmp_path, "shard1", 2, 1),
        "shard2": _pytest(tmp_path, "shard2", 2, 2),
    }
    try:
        outs = {name: run.communicate(timeout=900)[0] for name, run in runs.items()}
    finally:
        for run in runs.values():
            run.kill()
            run.communicate()
    for name, run in runs.items():
        assert run.returncode == 0, outs[name][-3000:]
    passed = {name: int(re.search(r"(\d+) passed", out).group(1)) for name, out in outs.items()}  # type: ignore[union-attr]
    assert passed["shard1"] and passed["shard2"] and passed["shard1"] + passed["shard2"] == passed["whole"]

    assert (
        cli.main(
            ["report", "--merge", str(tmp_path / "shard1"), str(tmp_path / "shard2"), "--out", str(tmp_path / "merged")]
        )
        == 0
    )
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "artifact"} for r in rows]  # noqa: E731
    assert [r["cell"] for r in merged["cells"]] == [r["cell"] for r in whole["cells"]]
    assert strip(merged["cells"]) == strip(whole["cells"])  # accuracy, statistics, sizes, predictions digests
    assert merged["fp32"] == whole["fp32"] and merged["versions"] == whole["versions"]
    assert (tmp_path / "merged" / "results.md").read_text().count("| resnet8-") == len(whole["cells"])


def test_merging_shards_of_different_runs_is_refused(tmp_path: Path, capsys) -> None:
    base = {"cpu_flags": ["avx2"], "calibration": {"seed": 42}, "min_payload_ratio": 3.8, "max_drop_points": 3.0,
            "versions": {}, "models": {}, "cells": []}  # fmt: skip
    for name, seed in (("a", 42), ("b", 7)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**base, "calibration": {"seed": seed}}))
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    assert exc.value.code == 2
    assert "differs from" in capsys.readouterr().err and not (tmp_path / "m").exists()
