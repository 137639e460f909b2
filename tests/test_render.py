"""The README's results section is a generated summary (each backend's best passing cell), docs/results.md's the
full table: both written by ``ptq report --readme``, never typed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptq_core import render, report
from ptq_core.errors import PTQError
from ptq_core.matrix import Cell

SECTION = f"before\n{render.RESULTS_START}\nby hand\n{render.RESULTS_END}\nafter\n"


@pytest.mark.slow
def test_the_readme_gets_each_backends_best_passing_cell_and_the_docs_every_cell(ws, tmp_path: Path) -> None:
    u8s8, distribution, nncf = Cell("onnxruntime", "u8s8"), Cell("onnxruntime", "u8s8", "distribution"), Cell("nncf")
    results = report.build(ws, studies=False, cells=(u8s8, distribution, nncf), archive=False, blame=False)
    readme, full = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    full.parent.mkdir()
    for path in (readme, full):
        path.write_text(SECTION)
    (tmp_path / "plot.png").write_bytes(b"png")
    written = render.update_readme(readme, results, tmp_path / "plot.png", tmp_path / "accuracy.png")
    assert written == [readme, full, tmp_path / "accuracy.png"]
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "by hand" not in text
    rows = [line for line in text.splitlines() if line.startswith("| resnet8 |")]
    assert [row.split(" | ")[2:4] for row in rows] == [
        ["onnxruntime", "u8s8-minmax-per_channel"],  # the distribution cell (12 %) is a known failure, never best
        ["nncf", "performance-fast_bias_correction-per_channel"],
    ]
    assert "1 of 2 (1 known failures)" in rows[0] and rows[1].endswith("| 1 of 1 |")
    assert "![accuracy of every cell" in text and "docs/results.md" in text
    assert render.markdown(results) in full.read_text() and distribution.id in full.read_text()


def test_a_file_without_the_results_markers_is_refused_naming_them(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no section\n")
    with pytest.raises(PTQError, match="has no <!-- results:start --> ... <!-- results:end --> section"):
        render.fill_section(readme, "table\n")
    assert readme.read_text() == "# no section\n"


def test_shards_of_another_results_schema_are_not_merged() -> None:
    part = {"schema": 2, "cpu_flags": [], "calibration": {}, "min_payload_ratio": 3.8, "max_drop_points": 3.0}
    older = {**part, "schema": 1}
    with pytest.raises(PTQError, match="b/ differs from a/ in 'schema'"):
        report.merge([{**part, "cells": []}, {**older, "cells": []}], ["a/", "b/"])


def test_a_marker_quoted_in_the_text_is_not_the_section(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text(
        f"`ptq report` fills what stands between `{render.RESULTS_START}` and `{render.RESULTS_END}`.\n{SECTION}"
    )
    render.fill_section(page, "table\n")
    assert page.read_text() == (
        f"`ptq report` fills what stands between `{render.RESULTS_START}` and `{render.RESULTS_END}`.\n"
        f"before\n{render.RESULTS_START}\ntable\n{render.RESULTS_END}\nafter\n"
    )
