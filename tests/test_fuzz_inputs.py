"""``ptq run``'s contract, fuzzed: over option values, --out/--cache placements and small generated models and
arrays, ``cli.main(["run", ...])`` exits 0, 1 or 2 and never with a traceback (no exception but argparse's and
PTQError's SystemExit(2) leaves it); an exit 2 leaves no --out (nor half of one beside it, nor a foreign folder
touched); a results.json it writes is strict JSON.

Derandomized (the same examples every run, as CI needs), one cheap cell, and a cache kept under the models
folder, so that a second run re-scores nothing: ~30 examples in ~20 s on 2 cores, far less once cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from ptq_core import cli

CELL = "onnxruntime-u8s8-minmax-per_channel"  # one cheap cell: a run on these models takes about a second
EXAMPLES = 30


@dataclass(frozen=True)
class Case:
    """One generated ``ptq run``: a model, its data, and the options."""

    classes: int
    features: int  # > 0: a first output of that many features before the scores
    weight: str  # "none" (identity scores), "finite", "nan" or "inf": a dense layer's weights
    n: int
    image_dtype: str
    layout: str  # "as the model", "transposed", "flat", "scalar"
    image_fault: str  # "none", "nan", "inf"
    labels: str  # "true", "shifted", "random", "out of range", "negative", "float", "short", "none"
    output: str | None  # --output NAME, if given
    options: tuple[str, ...] = field(default=())
    out: str = "new"  # where --out points
    cache: str = "shared"  # where --cache points


# each axis: (values a run gets through with, hostile values); an example makes at most two axes hostile
AXES: dict[str, tuple[list[Any], list[Any]]] = {
    "--max-drop": (["3", "0", "100", "0.5"], ["nan", "inf", "-1", "1e9", "three", ""]),
    "--samples": (["200", "7", "1000"], ["0", "-3", "x", "99999999999999999999", "1", "2"]),
    "--seed": (["42", "0", "4294967296"], ["-1", "1.5"]),
    "--cells": ([CELL, "*-u8s8-minmax-per_channel", "onnxruntime-u8s8-minmax-per_channe?"], ["nomatch-*", "[", ""]),
    "weight": (["none", "finite"], ["nan", "inf"]),
    "image_dtype": (["float32"], ["float64", "float16", "int64", "uint8", "bool"]),
    "layout": (["as the model"], ["transposed", "flat", "scalar"]),
    "image_fault": (["none"], ["nan", "inf"]),
    "labels": (["true"], ["shifted", "random", "out of range", "negative", "float", "short", "none"]),
    "output": (["right"], ["first", "missing"]),
    "out": (["new", "empty", "earlier", "inside cache"], ["foreign", "a file", ".", "the inputs' folder"]),
    "cache": (["shared"], ["inside out", "a file"]),
}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    hostile = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2]))
    bad = draw(st.lists(st.sampled_from(sorted(AXES)), min_size=hostile, max_size=hostile, unique=True))
    pick = {axis: draw(st.sampled_from(AXES[axis][axis in bad])) for axis in AXES}
    classes = draw(st.sampled_from([2, 3, 5, 300]))
    if classes > 256 and "--samples" not in bad:
        pick["--samples"] = "600"  # a stratified set takes an image of each class
    features = draw(st.sampled_from([0, 16])) if classes < 16 else 0
    output = {"right": "scores" if features else draw(st.sampled_from([None, "scores"])), "first": None,
              "missing": "nope"}[pick["output"]]  # fmt: skip
    if pick["output"] == "first" and not features:
        features = 16 if classes < 16 else 0  # the scores behind a first output of features
    return Case(
        classes=classes,
        features=features,
        weight=pick["weight"],
        n=classes * draw(st.sampled_from([1, 2, 5, 13])) if classes < 256 else 2 * classes,  # as many of each
        image_dtype=pick["image_dtype"],
        layout=pick["layout"],
        image_fault=pick["image_fault"],
        labels=pick["labels"],
        output=output,
        options=tuple(x for option in ("--max-drop", "--samples", "--seed", "--cells") for x in (option, pick[option])),
        out=pick["out"],
        cache=pick["cache"],
    )


def _model(case: Case, path: Path) -> Path:
    """(N, C, 4, 4) -> the mean of each channel (N, C) [-> a dense layer (C, classes)]; or, past 256 classes,
    (N, classes) -> 2x (a tiny model of many classes). ``features``: a first output of ReLU features whose
    argmax is never a class."""
    rng = np.random.default_rng(0)
    many = case.classes > 256
    channels = case.classes
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"])] if many else [
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0, axes=[2, 3])
    ]  # fmt: skip
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two")] if many else []
    outputs = []
    if case.features:
        bias = np.where(np.arange(case.features) < case.classes, -100.0, 1.0).astype(np.float32)
        inits += [
            numpy_helper.from_array(rng.normal(0, 0.1, (channels, case.features)).astype(np.float32), "wf"),
            numpy_helper.from_array(bias, "bf"),
        ]
        nodes += [
            helper.make_node("MatMul", ["m", "wf"], ["f"]),
            helper.make_node("Add", ["f", "bf"], ["fb"]),
            helper.make_node("Relu", ["fb"], ["features"]),
        ]
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", case.features]))
    if case.weight == "none":
        nodes.append(helper.make_node("Identity", ["m"], ["scores"]))
    else:
        weights = (np.eye(channels) * 2 + rng.normal(0, 0.05, (channels, channels))).astype(np.float32)
        weights[0, -1] = {"finite": weights[0, -1], "nan": np.nan, "inf": np.inf}[case.weight]
        inits.append(numpy_helper.from_array(weights, "dense"))
        nodes.append(helper.make_node("MatMul", ["m", "dense"], ["scores"]))
    outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", case.classes]))
    shape = ["N", channels] if many else ["N", channels, 4, 4]
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outputs,
                              inits)  # fmt: skip
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _data(case: Case, path: Path) -> Path:
    rng = np.random.default_rng(case.n)
    truth = np.arange(case.n) % case.classes
    many = case.classes > 256
    if many:
        images = np.eye(case.classes, dtype=np.float32)[truth] + rng.random((case.n, case.classes), np.float32) * 0.5
    else:
        images = rng.random((case.n, case.classes, 4, 4), np.float32) * 0.5
        images[np.arange(case.n), truth] += 0.5
    if case.image_fault != "none":
        images.reshape(-1)[rng.integers(images.size, size=3)] = np.nan if case.image_fault == "nan" else np.inf
    images = {
        "as the model": images,
        "transposed": np.moveaxis(images, 1, -1),
        "flat": images.reshape(case.n, -1),
        "scalar": np.float32(0.5),
    }[case.layout]
    with np.errstate(invalid="ignore", over="ignore"):
        images = np.asarray(images).astype(case.image_dtype)
    labels: Any = {
        "true": truth,
        "shifted": (truth + 1) % case.classes,
        "random": rng.integers(0, case.classes, case.n),
        "out of range": truth + case.classes,
        "negative": truth - 1,
        "float": truth.astype(np.float64),
        "short": truth[:-1],
        "none": None,
    }[case.labels]
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    np.savez(path, **arrays)
    return path


def _place(kind: str, work: Path, cache: Path) -> Path:
    """Where --out points: a new folder, an empty one, a foreign one (with a user's file), a file, a folder
    inside the cache, the current folder, the folder of the inputs, or an earlier run's output (replaceable)."""
    if kind == ".":
        return Path(".")
    if kind == "the inputs' folder":
        return work  # it holds --onnx and --data
    out = cache / "report" if kind == "inside cache" else work / "report"
    if kind == "empty":
        out.mkdir(parents=True)
    elif kind == "foreign":
        out.mkdir(parents=True)
        (out / "results.json").write_text("{}")
        (out / "notes.txt").write_text("mine")
    elif kind == "a file":
        out.write_text("a file")
    elif kind == "earlier":
        from ptq_core.output import write_folder

        write_folder(out, "run", lambda folder: (folder / "results.json").write_text("{}"))
    return out


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in results.json")

    return json.loads(text, parse_constant=refuse)


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fuzz_cache(ws) -> Path:
    """Kept across runs (every artifact and prediction is keyed): the same examples re-score nothing."""
    return ws.models_dir / "fuzz-inputs"


@pytest.mark.filterwarnings("ignore")  # as on the command line, a library's warning is not an error here
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_ptq_run_exits_0_1_or_2_never_a_traceback_and_never_half_an_output(
    case: Case, fuzz_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("fuzz")
    digest = hashlib.sha256(repr(case).encode()).hexdigest()[:12]  # a model name of its own: one per case
    model, data = _model(case, work / f"m{digest}.onnx"), _data(case, work / "data.npz")
    cache = {"shared": fuzz_cache, "inside out": work / "report" / "cache", "a file": work / "cache-file"}[case.cache]
    if case.cache == "a file":
        cache.write_text("a file")
    out = _place(case.out, work, fuzz_cache)
    output = [] if case.output is None else ["--output", case.output]
    argv = ["run", "--onnx", str(model), "--data", str(data), "--out", str(out), "--cache", str(cache), *output,
            *case.options]  # fmt: skip
    before = _snapshot(work / out)
    with contextlib.chdir(work), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            status = cli.main(argv)
        except SystemExit as exc:  # argparse's and PTQError's exit: 2, the message on stderr
            assert exc.code == 2, f"{argv}: SystemExit({exc.code!r})"
            status = 2
    assert status in (0, 1, 2), argv
    event(f"exit {status}")
    target = work / out
    leftovers = [p.name for p in target.parent.glob(f".{target.name}.{os.getpid()}.*")]
    assert not leftovers, f"{argv}: {leftovers} left beside --out"
    if status == 2:
        assert _snapshot(target) == before, f"{argv}: exit 2 changed --out"
    else:
        results = _strict_json((target / "results.json").read_text())
        assert results["run"]["num_classes"] == case.classes
