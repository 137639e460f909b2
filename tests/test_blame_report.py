"""Every evaluation that drops gets its blame table in the report, and only those: each more than half the allowed
drop below FP32, or with a collapsed class; measured once and cached under a key of everything that decides it;
an evaluation that cannot be blamed says why, and the report goes on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ptq_core import blame, blame_report, render, report
from ptq_core.blame import Blame, LayerBlame, format_table
from ptq_core.blame_report import NOT_BLAMED, SHARE, add, cached, dropping, headlines
from ptq_core.checks import MAX_ACCURACY_DROP_POINTS, MAX_CLASS_DROP_POINTS
from ptq_core.matrix import Cell
from ptq_core.run import summary

FP32_CLASSES = [0.9, 0.8]


def _entry(delta: float, classes: list[float] | None = None, checked: bool = True, outcome: str = "scored"):
    entry: dict[str, Any] = {"outcome": outcome, "checked": checked, "reason": None}
    if outcome == "scored":
        entry |= {"delta_points": delta, "per_class_accuracy": classes or FP32_CLASSES, "accuracy": 0.85}
    return entry


def _results(*runtimes: dict[str, dict[str, Any]], fp32_outcome: str = "scored") -> dict[str, Any]:
    fp32 = {"outcome": fp32_outcome, "checked": True, "per_class_accuracy": FP32_CLASSES, "accuracy": 0.85}
    names = {rt for on in runtimes for rt in on}
    return {
        "max_drop_points": MAX_ACCURACY_DROP_POINTS,
        "models": {"m": {"runtimes": {rt: fp32 for rt in names}}},
        "cells": [{"cell": f"m-cell{i}", "model": "m", "runtimes": on} for i, on in enumerate(runtimes)],
    }


HALF = MAX_ACCURACY_DROP_POINTS * SHARE  # 1.5 points
# a class's drop as check_no_class_collapses rounds it (to 0.1 point): 10.04 is 10.0, allowed; 10.06 is 10.1
AT_CLASS_LIMIT, OVER_CLASS_LIMIT = [0.9 - 0.1004, 0.8], [0.9 - 0.1006, 0.8]


@pytest.mark.parametrize(
    ("entry", "blamed"),
    [
        (_entry(-HALF), False),  # exactly half the allowed drop: within its margin
        (_entry(-HALF - 0.01), True),  # one image of 10,000 more
        (_entry(+2.0), False),
        (_entry(-0.2, AT_CLASS_LIMIT), False),
        (_entry(-0.2, OVER_CLASS_LIMIT), True),  # small overall, one class collapsed
        (_entry(-20.0, checked=False), False),  # a runtime the checks do not hold to FP32 (OpenVINO's bf16)
        (_entry(0.0, outcome="failed to load"), False),  # no scores, nothing to blame: the failure is reported
    ],
    ids=["half", "over_half", "gains", "class_at_limit", "class_over_limit", "unchecked", "failed"],
)
def test_an_evaluation_is_blamed_when_it_spends_over_half_the_allowed_drop_or_a_class_collapses(entry, blamed) -> None:  # type: ignore[no-untyped-def]
    assert [rt for _, rt in dropping(_results({"rt": entry}))] == (["rt"] if blamed else [])


def test_an_evaluation_whose_fp32_failed_is_not_blamed() -> None:
    assert list(dropping(_results({"rt": _entry(-20.0)}, fp32_outcome="failed while scoring"))) == []


def test_the_class_limit_is_the_class_checks() -> None:
    assert MAX_CLASS_DROP_POINTS == 10  # the limit the AT/OVER_CLASS_LIMIT figures above straddle


def _record(cell: str = "m-cell0", runtime: str = "rt") -> Blame:
    top = LayerBlame("conv_7", 3, 90, 2.9, "t7", 9.0, 12.0, 38.0, (0.0, 4.1), (0.0, 19.8))
    other = LayerBlame("conv_1", 0, 4, None, "t1", 31.0, 35.0, 41.0, (0.0, 5.0), (0.0, 5.0))
    return Blame(cell, runtime, "a.onnx", 10_000, 8719, 8357, 700, (top, other))


def test_a_blame_reads_back_as_the_record_it_was() -> None:
    record = _record()
    assert Blame.from_json(json.loads(json.dumps(record.as_json()))) == record


def test_each_dropping_evaluation_gets_its_table_and_one_that_cannot_be_blamed_says_why() -> None:
    results = _results({"a": _entry(-3.62), "b": _entry(-0.1)}, {"a": _entry(-5.0)})
    cells = (Cell("onnxruntime"), Cell("nncf"))
    results["cells"][0]["cell"], results["cells"][1]["cell"] = (c.id for c in cells)

    def measure(ws, cell, runtime, say):  # type: ignore[no-untyped-def]
        if cell.backend == "nncf":
            raise RuntimeError("nncf: no layer of it can be left in float")
        return _record(cell.id, runtime).as_json()

    said: list[str] = []
    add(None, results, cells, said.append, measure)  # type: ignore[arg-type]
    first, second = results["cells"]
    assert set(first["blame"]) == {"a"} and first["blame"]["a"]["layers"][0]["layer"] == "conv_7"
    assert second["blame"] == {"a": {NOT_BLAMED: "RuntimeError: nncf: no layer of it can be left in float"}}
    assert said == [f"{c.id} on a drops: which layers lose it (each left alone in float)" for c in cells]
    lines = headlines(results)
    assert lines[0].startswith(f"{cells[0].id} is 3.62 points below FP32 on a; leaving `conv_7` in float regains 2.90")
    assert lines[1] == f"why {cells[1].id} on a: not blamed: RuntimeError: nncf: no layer of it can be left in float"
    section = "\n".join(blame_report.markdown(results))
    assert f"### {cells[0].id} on a\n\n" + format_table(Blame.from_json(first["blame"]["a"])) in section
    assert f"- {cells[1].id} on a: not blamed: RuntimeError" in section


def test_the_report_and_the_run_summary_carry_the_blame() -> None:
    results = _results({"rt": _entry(-3.62)})
    results["cells"][0]["blame"] = {"rt": _record().as_json()}
    assert "## Which layers the dropping cells lose their accuracy in" in "\n".join(
        render_lines := blame_report.markdown(results)
    )
    assert render_lines[-1] == format_table(_record())
    results |= {"fp32": {"runtimes": {}}, "run": {}}
    results["cells"][0] |= {"expected_failure": None}
    assert summary(results, [])[-1] == _record().headline()


def test_a_ranking_on_a_sample_of_the_disagreeing_images_says_so() -> None:
    sampled = dataclasses.replace(_record(), disagreement=7479, ranked_on=1000)
    assert "| regained of 1000 of the 7479 disagreeing images |" in format_table(sampled)
    assert "| regained of 700 disagreeing images |" in format_table(_record())


def test_a_report_without_a_dropping_evaluation_has_no_blame_section() -> None:
    assert blame_report.markdown(_results({"rt": _entry(-0.5)})) == []


CELL = Cell("onnxruntime", "u8s8")


@pytest.fixture
def counted(monkeypatch):  # type: ignore[no-untyped-def]
    """``blame.blame`` replaced by a record of each call (its cache file is written to a models folder of the test)."""
    calls: list[tuple[str, str]] = []

    def fake(ws, cell, runtime=None, say=None, **_):  # type: ignore[no-untyped-def]
        calls.append((cell.id, runtime))
        return _record(cell.id, runtime)

    monkeypatch.setattr(blame, "blame", fake)
    return calls


def _in(folder: Path, ws):  # type: ignore[no-untyped-def]
    """``ws`` whose blame files go to ``folder``; its artifacts are the suite's."""
    built, fp32 = ws.quantized(CELL), ws.fp32("onnx")
    moved = dataclasses.replace(ws, models_dir=folder)
    object.__setattr__(moved, "quantized", lambda cell, config=None: built)
    object.__setattr__(moved, "fp32", lambda fmt, model=None: fp32)
    return moved


def test_a_blame_is_measured_once_per_artifact_and_runtime(ws, tmp_path: Path, counted, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store = _in(tmp_path, ws)
    first = cached(store, CELL, "onnxruntime", print)
    assert cached(store, CELL, "onnxruntime", print) == first and counted == [(CELL.id, "onnxruntime")]
    cached(store, CELL, "openvino", print)
    assert counted[-1] == (CELL.id, "openvino")
    monkeypatch.setattr(blame_report, "cpu_capability", lambda: "another-cpu")  # its kernels flip other images
    cached(store, CELL, "onnxruntime", print)
    monkeypatch.setattr(blame_report, "BLAME_MODULES", (*blame_report.BLAME_MODULES, "render"))  # other code
    cached(store, CELL, "onnxruntime", print)
    assert len(counted) == 4


@pytest.mark.e2e  # the distribution cell is 74 points below FP32: 10 layers on ~7,500 images, 3 on the test split
def test_the_suites_report_blames_its_known_failure(ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    distribution = Cell("onnxruntime", "u8s8", "distribution")
    close = Cell("onnxruntime", "uint8")  # 0.42 points below FP32 on each CPU measured: within half its margin
    results = report.build(ws, studies=False, cells=(close, distribution), archive=False)
    rows = {r["cell"]: r for r in results["cells"]}
    assert "blame" not in rows[close.id]
    found = Blame.from_json(rows[distribution.id]["blame"]["onnxruntime"])
    assert set(rows[distribution.id]["blame"]) == {"onnxruntime", "openvino"}
    assert found.drop_points > 70 and found.layers[0].regained_points is not None
    assert found.disagreement > 7000 and found.ranked_on == blame.RANKED_IMAGES  # an even sample of them
    text = render.markdown(results)
    assert f"### {distribution.id} on onnxruntime" in text and format_table(found) in text


def test_the_pytest_summary_points_to_where_each_dropping_evaluation_is_blamed() -> None:
    from types import SimpleNamespace

    from ptq_core.pytest_plugin.matrix import _point_to_the_blame

    lines: list[str] = []
    terminal = SimpleNamespace(write_line=lines.append)
    options: dict[str, str | None] = {"ptq_report": None}
    config = SimpleNamespace(getoption=lambda name, default=None: options.get(name, default), stash={})
    cells = {
        "c1": {"accuracy@onnxruntime": 0.8555, "fp32@onnxruntime": 0.8719, "accuracy@openvino": 0.871},
        "c2": {"accuracy@onnxruntime": 0.8570, "fp32@onnxruntime": 0.8719},  # 1.49 points: within half the margin
    }
    _point_to_the_blame(terminal, config, cells)  # type: ignore[arg-type]
    assert lines == [
        "1 evaluations are more than 1.5 points below FP32 (c1 on onnxruntime): which layers lose it: `python -m "
        "ptq_core explain CELL --runtime RT`, or --ptq-report DIR (the blame of every one, in results.md)"
    ]
    options["ptq_report"] = "report"  # the report's own headlines say it
    _point_to_the_blame(terminal, config, cells)  # type: ignore[arg-type]
    assert len(lines) == 1
