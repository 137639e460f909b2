"""Known failures as data: which checks fail on which cells, runtimes, CPUs and library releases, and the
measured reason. The suite turns them into xfail(strict) marks; ``ptq run``, ``ptq bench`` and ``ptq tune``
read them to tell a known failure from a regression."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ptq_core.matrix import Cell

ACCURACY_CHECKS = ("check_accuracy_vs_fp32", "check_no_class_collapses")


# The pseudo-check a known failure names when the runtime cannot evaluate the cell at all (load, compile, score)
EVALUATION = "evaluation"


@dataclass(frozen=True)
class KnownFailure:
    """Checks that fail on these cells (and runtimes), with the measured reason. They run as xfail(strict).

    A known failure belongs to what it was measured on: the registered models it names (never a user's
    model), the CPU capabilities (``machine.cpu_capability()``) and the library releases."""

    models: tuple[str, ...]
    applies: Callable[[Cell], bool]
    checks: tuple[str, ...]
    reason: Callable[[Cell, str | None], str]
    runtimes: tuple[str, ...] | None = None  # None: on every runtime
    cpus: tuple[str, ...] | None = None  # None: measured the same on every CPU the suite has run on
    libraries: Callable[[], bool] = lambda: True  # the library releases it was measured on

    def matches(self, cell: Cell, check: str, runtime: str | None, cpu: str) -> bool:
        return (
            cell.model in self.models
            and check in self.checks
            and (self.runtimes is None or runtime in self.runtimes)
            and (self.cpus is None or cpu in self.cpus)
            and self.applies(cell)
            and self.libraries()
        )


_DISTRIBUTION_MEASURED = {  # (dtype, granularity) -> {runtime: accuracy %}, onnxruntime 1.32 / openvino 2026.4
    ("int8", "per_channel"): {"onnxruntime": "12.67", "openvino": "12.67"},
    ("int8", "per_tensor"): {"onnxruntime": "12.20", "openvino": "12.15"},
    ("uint8", "per_channel"): {"onnxruntime": "12.94", "openvino": "12.94"},
    ("uint8", "per_tensor"): {"onnxruntime": "12.89", "openvino": "12.88"},
    ("u8s8", "per_channel"): {"onnxruntime": "12.67", "openvino": "12.67"},
    ("u8s8", "per_tensor"): {"onnxruntime": "12.20", "openvino": "12.15"},
}


def _openvino_release() -> tuple[int, int]:
    from ptq_core.cache import library_versions

    major, minor = library_versions(("openvino",))["openvino"].split(".")[:2]
    return int(major), int(minor)


def _ort_u8s8_saturates(c: Cell, rt: str | None) -> str:
    measured = (
        "this one 3.34 (83.85 %), its worst class 9.0; with its first conv (raw pixels in, [0, 255]) alone in float "
        "it regains 2.45 (ptq explain)"
        if c.model == "resnet8"
        else "MobileNetV1's per-channel one 5.42 (80.72 %), class 0 23.2 points below FP32's; with its first conv "
        "alone in float it regains 5.40 (ptq explain)"
    )
    return (
        "measured on an AMD EPYC with AVX2 and no VNNI (onnxruntime 1.32.0): ORT's u8s8 kernels sum u8 x s8 pairs in "
        "16 bits there and saturate (its quantization docs: use U8U8 or reduce_range without VNNI); every ResNet8 "
        f"u8s8 cell loses 1.6-3.3 points on it, 0.3-1.1 on the VNNI and AMX CPUs; {measured}"
    )


KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(
        models=("resnet8",),
        applies=lambda c: c.backend == "onnxruntime" and c.calibrator == "distribution",
        checks=ACCURACY_CHECKS,
        reason=lambda c, rt: (
            "ORT's Distribution calibrator (meant for float8) gives ReLU outputs symmetric +-max|x| ranges, yet "
            "QDQ still removes the ReLUs: measured "
            f"{_DISTRIBUTION_MEASURED[(c.dtype, c.granularity)].get(rt or '', '12.15-12.94')} % "
            f"on {rt}"
        ),
    ),
    KnownFailure(
        models=("resnet8",),
        applies=lambda c: c.backend == "onnxruntime" and c.dtype == "uint8",
        checks=("check_runs_8bit_on_openvino",),
        reason=lambda c, rt: (
            "U8U8 stores u8 weights with zero point 128, where the other dtypes store s8: measured, OpenVINO runs "
            "9 of ResNet8's 10 conv/linear ops in f32 (every conv; the Gemm in u8), whatever the calibrator"
        ),
    ),
    KnownFailure(
        models=("resnet8",),
        applies=lambda c: c.backend == "onnxruntime" and c.dtype == "u8s8" and c.calibrator in ("minmax", "entropy"),
        checks=("check_runs_8bit_on_openvino",),
        libraries=lambda: _openvino_release() >= (2026, 3),
        reason=lambda c, rt: (
            "u8 activations calibrated to ResNet8's raw pixels, [0, 255], give the input a scale of exactly 1.0 and "
            "zero point 0: measured, OpenVINO 2026.3.0-2026.4.1 then runs the first conv in f32 (1 of 10 ops; "
            "2026.0.0-2026.2.1 run it in u8; so does 2026.4.1 one ulp above 1.0, and the minmax per-channel cell "
            "goes from 2.66x to 3.18x ORT FP32 at batch 256, 1 thread)"
        ),
    ),
    KnownFailure(
        models=("resnet8",),
        applies=lambda c: c.backend == "onnxruntime" and c.dtype == "int8" and c.calibrator != "distribution",
        checks=(EVALUATION,),
        runtimes=("openvino_default",),
        cpus=("amx",),
        libraries=lambda: (2026, 0) <= _openvino_release() <= (2026, 4),
        reason=lambda c, rt: (
            "measured on an Intel Xeon with AMX-INT8/AMX-BF16 (OpenVINO 2026.0.0, 2026.1.0, 2026.2.0, 2026.3.0 and "
            "2026.4.1, each): at its default precision, bf16 "
            "there, the CPU plugin cannot compile ResNet8's S8S8 minmax/entropy/percentile cells (\"Check "
            "'!implementations.empty()' failed\" in its executor factory); with the f32 hint they compile, and "
            "every u8s8, uint8, NNCF, distribution and MobileNetV1 cell compiles at both"
        ),
    ),
    KnownFailure(
        models=("resnet8",),
        applies=lambda c: (
            (c.backend, c.dtype, c.calibrator, c.granularity) == ("onnxruntime", "u8s8", "entropy", "per_channel")
        ),
        checks=("check_accuracy_vs_fp32",),  # its worst class falls 9.0 points: within the class check
        runtimes=("onnxruntime",),
        cpus=("avx2",),
        reason=_ort_u8s8_saturates,
    ),
    KnownFailure(
        models=("mobilenetv1",),
        applies=lambda c: (c.backend, c.dtype, c.granularity) == ("onnxruntime", "u8s8", "per_channel"),
        checks=ACCURACY_CHECKS,
        runtimes=("onnxruntime",),
        cpus=("avx2",),
        reason=_ort_u8s8_saturates,
    ),
    KnownFailure(
        models=("resnet8", "mobilenetv1"),
        applies=lambda c: (
            c.backend == "onnxruntime"
            and c.granularity == "per_channel"
            and (
                (c.model, c.dtype, c.calibrator)
                in (("resnet8", "u8s8", "percentile"), ("mobilenetv1", "u8s8", "minmax"))
                or (c.model == "resnet8" and c.dtype == "int8" and c.calibrator != "distribution")
            )
        ),
        checks=ACCURACY_CHECKS,
        runtimes=("openvino",),
        cpus=("avx2",),
        reason=lambda c, rt: (
            "measured on an AMD EPYC with AVX2 and no VNNI (openvino 2026.4.1, f32 hint): OpenVINO's int8 kernels "
            "there lose "
            + (
                "14.55-16.24 points on ResNet8's S8S8 per-channel cells and its u8s8 percentile per-channel one "
                "(70.95-72.64 %; class 5 37.6-42.3 points below FP32's), within 1 point on the VNNI and AMX CPUs"
                if c.model == "resnet8"
                else "5.89 points on MobileNetV1's u8s8 per-channel cell (80.25 %; a class 17.9 below FP32's), "
                "0.03 on the VNNI CPU"
            )
        ),
    ),
    KnownFailure(
        models=("mobilenetv1",),
        applies=lambda c: c.backend == "pytorch" and c.granularity == "per_channel",
        checks=("check_size_ratio",),
        reason=lambda c, rt: (
            "a depthwise conv has 9 int8 weights per output channel, and PT2E stores a scale and a zero point "
            "tensor element for each: measured 295,728 B of weights and qparams against 1,097,600 B FP32, 3.71x"
        ),
    ),
)


def known_failure(cell: Cell, check: str, runtime: str | None = None, cpu: str | None = None) -> str | None:
    """The measured reason ``check`` fails on ``cell`` (on ``runtime``, on this CPU or ``cpu``), else None."""
    from ptq_core.machine import cpu_capability

    cpu = cpu or cpu_capability()
    for known in KNOWN_FAILURES:
        if known.matches(cell, check, runtime, cpu):
            return known.reason(cell, runtime)
    return None
