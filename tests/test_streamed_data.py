"""Images on disk read batch by batch (``ptq_core.shards``): a folder of shards or images.npy + labels.npy reads as
the one array it holds, gives ``ptq run`` the report the same images in one .npz give, and is never held whole.
Tiny models and data, built here; the 10,000 / 50,000-image memory figures are a benchmark (test_benchmark.py)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_run import _tiny_onnx, ptq_run

from ptq_core import shards
from ptq_core.shards import chunks, open_shards
from ptq_core.user import UserStore

CELL = "onnxruntime-u8s8-minmax-per_tensor"


def _write(folder: Path, images: np.ndarray, labels: np.ndarray, cuts: list[int], npz: list[bool]) -> Path:
    """``images`` cut at ``cuts`` into shards, each an .npz or an images-K.npy + labels-K.npy pair."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [0, *cuts, len(images)]
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if npz[k % len(npz)]:
            np.savez(folder / f"images-{k:03}.npz", images=images[lo:hi], labels=labels[lo:hi])
        else:
            np.save(folder / f"images-{k:03}.npy", images[lo:hi])
            np.save(folder / f"labels-{k:03}.npy", labels[lo:hi])
    return folder


def _layouts(n: int) -> st.SearchStrategy:
    cuts = st.lists(st.integers(1, n - 1), max_size=4, unique=True).map(sorted)
    return st.tuples(cuts, st.lists(st.booleans(), min_size=1, max_size=5))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=_layouts(37), data=st.data())
def test_shards_read_as_the_one_array_they_hold(layout, data, tmp_path_factory) -> None:
    images = np.random.default_rng(0).random((37, 2, 3), dtype=np.float32)
    labels = np.arange(37) % 5
    folder = _write(tmp_path_factory.mktemp("shards"), images, labels, *layout)
    got, got_labels = open_shards(folder, "--data", need_labels=True)
    assert (got.shape, got.dtype, len(got)) == (images.shape, images.dtype, 37)
    np.testing.assert_array_equal(got_labels, labels)
    lo, hi = sorted(data.draw(st.tuples(st.integers(-40, 40), st.integers(-40, 40))))
    np.testing.assert_array_equal(got[lo:hi], images[lo:hi])
    np.testing.assert_array_equal(got[lo:hi:3], images[lo:hi:3])
    index = np.array(data.draw(st.lists(st.integers(-37, 36), max_size=50)), dtype=np.int64)
    np.testing.assert_array_equal(got[index], images[index])
    np.testing.assert_array_equal(got[-1], images[-1])
    np.testing.assert_array_equal(np.concatenate(list(chunks(got))), images)
    for outside in (37, -38):
        with pytest.raises(IndexError):
            got[np.array([outside])]


def test_a_run_on_shards_reports_what_the_same_images_in_one_npz_report(tmp_path, capsys) -> None:
    rng = np.random.default_rng(1)
    labels = np.arange(60) % 3
    images = rng.random((60, 3, 32, 32), dtype=np.float32) * 0.5
    images[np.arange(60), labels] += 0.5  # the tiny model's class is the brightest channel
    model, cache = _tiny_onnx(tmp_path / "sharded.onnx"), tmp_path / "cache"
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    one_pair = _write(tmp_path / "pair", images, labels, [], [False])
    (one_pair / "images-000.npy").rename(one_pair / "images.npy")
    (one_pair / "labels-000.npy").rename(one_pair / "labels.npy")
    sources = {
        "npz": tmp_path / "data.npz",
        "shards": _write(tmp_path / "shards", images, labels, [7, 31, 32], [True, False]),
        "images.npy": one_pair / "images.npy",
    }
    reports = {}
    for name, data in sources.items():
        out = tmp_path / f"report-{name}"
        status, text = ptq_run(capsys, "--onnx", model, "--data", data, "--out", out, "--cache", cache, "--cells", CELL)
        assert status in (0, 1), text
        reports[name] = json.loads((out / "results.json").read_text())
    for name in ("shards", "images.npy"):
        for key in ("fp32", "cells", "calibration"):
            assert reports[name][key] == reports["npz"][key], (name, key, reports[name][key], reports["npz"][key])


@pytest.mark.parametrize("kind", ["images.npy", "npz"])
def test_streamed_data_is_checked_digested_and_scored_a_chunk_at_a_time(kind, tmp_path, monkeypatch) -> None:
    """2,000 images of 12 KB (24.6 MB) opened as a user's data (every image checked, digested, scored on ONNX
    Runtime): numpy holds under 8 MB at once from images.npy, in 1 MB chunks; the .npz, read whole, shows that
    the measure sees a whole copy (over 24 MB)."""
    monkeypatch.setattr(shards, "CHUNK_BYTES", 1 << 20)
    labels = np.arange(2000) % 3
    images = np.random.default_rng(2).random((2000, 3, 32, 32), dtype=np.float32) * 0.5
    images[np.arange(2000), labels] += 0.5
    if kind == "npz":
        data = tmp_path / "data.npz"
        np.savez(data, images=images, labels=labels)
    else:
        data = _write(tmp_path / "data", images, labels, [], [False])
    model = _tiny_onnx(tmp_path / f"chunked_{kind.replace('.', '_')}.onnx")
    del images
    tracemalloc.start()
    try:
        store = UserStore.open(model, data, cache_dir=tmp_path / "cache")
        store.data_sha256("test")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if kind == "npz":
        assert peak > 24e6, peak
    else:
        assert peak < 8e6, peak
