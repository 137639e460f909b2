"""``ptq run --model FILE.pt2``: a PyTorch classifier that is not the project's, saved as a torch.export archive, gets
the PT2E cells (scored on torch) and, through its ONNX export, the ONNX cells; FP32 is scored in both formats and the
report says how far they agree. An archive ptq run cannot use is refused before any work (exit 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_failures_are_results import tiny_data
from test_run import ptq_run

from ptq_core import cli
from ptq_core.runtimes import runtimes_for

CELLS = ("pytorch-uint8-minmax-per_channel", "onnxruntime-u8s8-percentile-per_channel")


class BrightestChannel(torch.nn.Module):
    """(N, 3, 16, 16) -> (N, 3): three 3x3 convs of 64 channels that carry each input channel through (centre taps
    near the identity, a little noise), a global mean and a linear layer back to the 3 channels: an image whose
    channel k is the brightest is class k. 76,000 weights, so the 8-bit files are as much smaller as the checks ask."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64, 3)
        spread = torch.arange(64) % 3  # output channel c carries input channel c % 3
        with torch.no_grad():
            for conv, source in ((self.conv1, spread), (self.conv2, torch.arange(64)), (self.conv3, torch.arange(64))):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.01)
                conv.weight[torch.arange(64), source, 1, 1] += 1.0
                conv.bias.zero_()
            self.fc.weight.copy_(torch.nn.functional.one_hot(spread, 3).T.float() / 21)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def _archive(path: Path, dynamic: bool = True, inputs: int = 1) -> Path:
    net = BrightestChannel().eval()
    x = torch.rand(4, 3, 16, 16)
    if inputs == 2:
        net.forward = lambda a, b: BrightestChannel.forward(net, a + b)  # type: ignore[method-assign]
    args = (x,) * inputs
    shapes = tuple({0: torch.export.Dim("batch")} for _ in range(inputs)) if dynamic else None
    torch.export.save(torch.export.export(net, args, dynamic_shapes=shapes), path)
    return path


@pytest.fixture(scope="module")
def pt2_run(tmp_path_factory, ws):
    d = tmp_path_factory.mktemp("pt2")
    model, data, out = _archive(d / "brightest.pt2"), tiny_data(d / "data.npz"), d / "report"
    args = ["--model", model, "--data", data, "--out", out, "--cache", ws.models_dir / "run-pt2", "--cells", *CELLS]
    status = cli.main([str(a) for a in ["run", *args]])
    return status, json.loads((out / "results.json").read_text())


@pytest.mark.e2e  # a whole ptq run: an ONNX export, a PT2E build, 8 evaluations and the checks
def test_a_pt2_gets_its_pt2e_cells_on_torch_and_its_onnx_export_the_onnx_cells(pt2_run) -> None:
    status, results = pt2_run
    on = {row["cell"]: row["runtimes"] for row in results["cells"]}
    assert set(on) == {f"brightest-{c}" for c in CELLS}
    assert set(on["brightest-pytorch-uint8-minmax-per_channel"]) == {r.name for r in runtimes_for("pt2")} == {"torch"}
    assert set(on["brightest-onnxruntime-u8s8-percentile-per_channel"]) == {r.name for r in runtimes_for("onnx")}
    assert all(e["outcome"] == "scored" for runtimes in on.values() for e in runtimes.values())
    failed = [c for c in results["checks"] if not c["passed"]]
    assert status == (1 if failed else 0), failed
    assert not failed, failed  # the graph, dtypes, granularity, sizes and accuracy of both cells


@pytest.mark.e2e  # a whole ptq run: an ONNX export, a PT2E build, 8 evaluations and the checks
def test_fp32_is_scored_in_both_formats_and_their_agreement_reported(pt2_run) -> None:
    _, results = pt2_run
    fp32 = results["models"]["brightest"]["runtimes"]
    assert {rt: e["format"] for rt, e in fp32.items()} == {r.name: r.format for r in runtimes_for()}
    agreement = results["run"]["fp32_agreement"]
    assert set(agreement) == {f"torch vs {r.name}" for r in runtimes_for("onnx")}
    assert all(share > 0.99 for share in agreement.values()), agreement  # one computation, two runtimes
    assert results["run"]["pt2"].endswith("brightest.pt2")


@pytest.mark.e2e  # a short tune: an ONNX export, PT2E and ONNX builds, 7 validations, 9 timings: 33 s measured
def test_ptq_tune_tries_a_pt2s_pt2e_cells_on_inductor_and_its_onnx_export_on_the_onnx_runtimes(ws, tmp_path) -> None:
    model, out = _archive(tmp_path / "brightest.pt2"), tmp_path / "tuned"
    argv = ["tune", "--onnx", model, "--data", tiny_data(tmp_path / "data.npz"), "--max-drop", "3", "--out", out,
            "--calibration", tiny_data(tmp_path / "calibration.npz", n=600), "--cache", ws.models_dir / "run-pt2",
            "--cells", *CELLS]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    result = json.loads((out / "tune.json").read_text())
    tried = {(c["cell"], c["runtime"]) for c in result["candidates"]}
    assert ("brightest-pytorch-uint8-minmax-per_channel", "inductor") in tried, tried
    assert {rt for cell, rt in tried if cell == "brightest-onnxruntime-u8s8-percentile-per_channel"} == {
        "onnxruntime",
        "openvino",
    }, tried
    assert not result["failed_candidates"] and result["chosen"]["test_accuracy"] > 0.99, result["chosen"]


def _not_a_zip(d: Path) -> Path:
    (d / "m.pt2").write_bytes(b"not an archive")
    return d / "m.pt2"


def _zip_of_nothing(d: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(d / "m.pt2", "w") as z:
        z.writestr("hello.txt", "a zip, but no program")
    return d / "m.pt2"


BAD_ARCHIVES = {
    "not a zip file": (_not_a_zip, r"--model \S+m\.pt2 is not a torch\.export archive \(not a zip file\): save it"),
    "a zip with no program": (_zip_of_nothing, r"is not a torch\.export archive torch \S+ reads \(.+\): save it"),
    "a fixed batch": (
        lambda d: _archive(d / "m.pt2", dynamic=False),
        r"the program's input has a fixed batch of 4 .*export it with a dynamic batch dimension",
    ),
    "two inputs": (
        lambda d: _archive(d / "m.pt2", inputs=2),
        r"the program takes 2 inputs .*ptq run feeds one tensor of images",
    ),
}


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_an_archive_ptq_run_cannot_use_exits_2_before_any_work(case, tmp_path, capsys) -> None:
    make, message = BAD_ARCHIVES[case]
    out, cache = tmp_path / "report", tmp_path / "cache"
    data = tiny_data(tmp_path / "data.npz")
    status, text = ptq_run(capsys, "--model", make(tmp_path), "--data", data, "--out", out, "--cache", cache)
    assert status == 2, text
    assert re.search(message, text), text
    assert "Traceback" not in text and not out.exists()
    assert not list(cache.glob("**/*.onnx"))  # nothing exported, nothing built


def test_the_brightest_channel_model_classifies_its_data() -> None:
    """The test model is a classifier (ptq run refuses one at chance): its FP32 accuracy on the data, measured."""
    rng = np.random.default_rng(1)
    labels = np.arange(300) % 3
    images = rng.random((300, 3, 16, 16), dtype=np.float32) * 0.5
    images[np.arange(300), labels] += 0.5
    with torch.no_grad():
        predicted = BrightestChannel().eval()(torch.from_numpy(images)).argmax(1).numpy()
    assert (predicted == labels).mean() == 1.0


def test_an_archives_layers_are_named_as_its_module_named_them_and_each_can_stay_float(tmp_path) -> None:
    # an archive's module is a plain GraphModule, with no nn.Conv2d for named_modules() to find: its layers are
    # read from the graph's nodes, and the quantizer leaves the one named in float (ptq tune's mixed precision,
    # the blame's revert-one-layer builds)
    from ptq_core.backends import BACKENDS
    from ptq_core.backends.pytorch import weight_layers
    from ptq_core.formats import pt2
    from ptq_core.run import RunInputs

    model, data = _archive(tmp_path / "brightest.pt2"), tiny_data(tmp_path / "data.npz")
    store = RunInputs(model, data, cache_dir=tmp_path / "cache").open()
    cell = next(c for c in store.cells() if c.id.endswith(CELLS[0]))
    inputs = store.build_inputs(cell)[0]
    assert weight_layers(inputs) == ("conv1", "conv2", "conv3", "fc")
    out = tmp_path / "conv2-in-float.pt2"
    BACKENDS["pytorch"].quantize(inputs, cell, out, float_layers=("conv2",))  # refuses a count that is off
    found = pt2.inspect(out)
    assert (found.weight_ops, found.quantized_weight_ops) == (4, 3)
