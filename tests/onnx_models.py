"""ONNX models that tests build by hand, stamped with an IR version and opset every allowed release reads.

``onnx.helper.make_model`` stamps the installed onnx's own IR version (onnx 1.23: IR 14), which
onnxruntime 1.27.0 to 1.31.1 refuse ("Unsupported model IR version: 14, max supported IR version: 13");
only 1.32 reads it. Build every hand-made model through :func:`make_model` here instead.
"""

from __future__ import annotations

import onnx
from onnx import helper

# IR 10: the highest that every release pyproject allows reads, measured by loading a model at each IR
# version: onnxruntime 1.27.0 (its floor) and 1.31.1 read IR <= 13 and opset <= 26 (1.32.0: IR 14,
# opset 28), but onnx 1.17 (onnx's floor: tox -e min) has IR_VERSION 10 and its onnx.checker, which
# `ptq run` calls on a user's model, fails anything higher ("Your model ir_version 11 is higher than the
# checker's (10)"). torch.onnx.export and the suite's own models write IR 10 too.
IR_VERSION = 10
# Opset 17: the last one whose ReduceMean takes `axes` as an attribute; within every floor's range
# (onnx 1.17: <= 22, onnxruntime 1.27.0: <= 26).
OPSET = 17


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """``graph`` as a model at :data:`IR_VERSION` and the default domain's :data:`OPSET`."""
    return helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", OPSET)])
