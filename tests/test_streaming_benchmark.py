"""``ptq run`` on 10,000 and on 50,000 real CIFAR-10 images (the test split; the train split) given as images.npy +
labels.npy, read batch by batch: the peak memory of the 50,000-image run stays within 1.2x of the 10,000-image
run's, and its time within 1.1x of the linear extrapolation (seconds per image). Each run is a fresh process with
a fresh cache, calibrated on 200 stratified images of its data (``ptq run``'s default), so both build the cell once.

A benchmark (``tox -e bench``): two runs of ResNet8's FP32 ONNX export and NNCF's default cell on every ONNX runtime,
~3 minutes on 2 cores, and 740 MB of images written to the temporary folder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.benchmark

CELL = "nncf-performance-fast_bias_correction-per_channel"
MAX_MEMORY_RATIO = 1.2  # the goals: peak RSS of 50,000 images against 10,000 ...
MAX_TIME_OVER_LINEAR = 1.1  # ... and seconds per image against the 10,000-image run's


def _save(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir()
    np.save(folder / "images.npy", images.astype(np.float32))  # as the FP32 export takes them: NHWC 0..255
    np.save(folder / "labels.npy", labels)
    return folder / "images.npy"


# The run's own peak: the high-water mark of the memory it mapped after exec (VmHWM). A child's ru_maxrss would also
# count this test's process, whose memory it borrowed until exec (measured: 0.91 GB for either run here).
CHILD = """import sys
from ptq_core.cli import main
status = main(sys.argv[2:])
with open("/proc/self/status") as f, open(sys.argv[1], "w") as out:
    out.write(next(line for line in f if line.startswith("VmHWM:")).split()[1])
sys.exit(status)
"""


def _run(onnx: Path, data: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of one ``ptq run`` in its own process, with its own cache."""
    args = ["--onnx", onnx, "--data", data, "--cells", CELL, "--out", out, "--cache", out.with_name("cache")]
    peak = out.with_name("peak_kb")
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(peak), "run", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seconds = time.perf_counter() - start
    assert run.returncode in (0, 1), run.stderr.decode()[-2000:]
    return int(peak.read_text()) / 1e6, seconds


def test_streamed_run_memory_is_flat_and_time_linear_in_the_images(benchmark, ws, tmp_path) -> None:
    test, train = ws.split("test"), ws.split("train")
    onnx = ws.fp32("onnx")
    small = _save(tmp_path / "10k", test.images, test.labels)
    large = _save(tmp_path / "50k", train.images, train.labels)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    memory_10k, seconds_10k = _run(onnx, small, tmp_path / "a" / "report")
    memory_50k, seconds_50k = benchmark.pedantic(_run, (onnx, large, tmp_path / "b" / "report"), rounds=1, iterations=1)
    n_small, n_large = len(test), len(train)
    over_linear = (seconds_50k / n_large) / (seconds_10k / n_small)
    benchmark.extra_info.update(
        {
            "peak_rss_gb": {str(n_small): round(memory_10k, 3), str(n_large): round(memory_50k, 3)},
            "seconds": {str(n_small): round(seconds_10k, 1), str(n_large): round(seconds_50k, 1)},
            "memory_ratio": round(memory_50k / memory_10k, 3),
            "time_over_linear": round(over_linear, 3),
        }
    )
    print(
        f"\n{n_small} images: {memory_10k:.2f} GB, {seconds_10k:.1f} s; {n_large} images: {memory_50k:.2f} GB "
        f"({memory_50k / memory_10k:.2f}x), {seconds_50k:.1f} s ({over_linear:.2f}x linear)"
    )
    assert memory_50k <= MAX_MEMORY_RATIO * memory_10k
    assert over_linear <= MAX_TIME_OVER_LINEAR
