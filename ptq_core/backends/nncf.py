"""NNCF ``nncf.quantize`` on the FP32 ONNX model: the tool a user would pick instead of ORT's quantizer.

dtype names are NNCF's presets: ``performance`` (symmetric weights and activations) and ``mixed``
(symmetric weights, asymmetric activations). The calibrator axis is the bias correction NNCF applies
after range estimation: its default ``fast_bias_correction``, or ``no_bias_correction``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ptq_core.backends import Backend, BuildInputs, Stored
from ptq_core.formats.onnx import input_name

CALIB_BATCH = 50

BACKEND = Backend(
    name="nncf",
    source="onnx",
    format="onnx",
    dtypes={
        "performance": Stored(("int8", "uint8"), "int8"),  # signed, or unsigned where the input is >= 0
        "mixed": Stored(("int8", "uint8"), "int8"),
    },
    calibrators=("fast_bias_correction", "no_bias_correction"),
    granularities=("per_channel",),  # NNCF quantizes conv/linear weights per output channel
    libraries=("nncf", "onnxruntime"),  # nncf.quantize collects an ONNX model's statistics by running ONNX Runtime
    min_file_ratio=3.0,  # the same QDQ layout as onnxruntime's: see ptq_core/backends/onnxruntime.py
    twin=lambda cell: cell.replace(backend="onnxruntime", dtype="u8s8", calibrator="minmax"),
)


def quantize(inputs: BuildInputs, cell: Any, out: Path) -> None:
    import contextlib
    import io

    import nncf
    import numpy as np
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    nncf.set_log_level(logging.ERROR)
    images = np.ascontiguousarray(inputs.images)  # in the dtype the model takes
    size = max(b for b in range(1, min(CALIB_BATCH, len(images)) + 1) if len(images) % b == 0)
    name = input_name(inputs.fp32)
    batches = [{name: batch} for batch in np.split(images, len(images) // size)]
    with contextlib.redirect_stdout(io.StringIO()):  # rich progress bars, which the log level does not govern
        quantized = nncf.quantize(
            onnx.load(str(inputs.fp32)),
            nncf.Dataset(batches),
            preset=nncf.QuantizationPreset(cell.dtype),
            subset_size=len(batches),  # counts dataset items (batches): every calibration image
            fast_bias_correction=True,
            advanced_parameters=AdvancedQuantizationParameters(
                # per-image statistics, as with batches of 1 (a list has no batch_size for NNCF to read)
                batchwise_statistics=True,
                disable_bias_correction=cell.calibrator == "no_bias_correction",
            ),
        )
    onnx.save(quantized, str(out))
