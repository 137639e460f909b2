"""Accuracy regression suite for static post-training quantization: registries of models, backends and
runtimes; one ``evaluate``; checks that run on any artifact."""

from ptq_core.calibration import CalibrationConfig, CalibrationSet
from ptq_core.errors import PTQError
from ptq_core.eval import EvalResult, evaluate
from ptq_core.matrix import CELLS, Cell
from ptq_core.workspace import Workspace

__all__ = [
    "CELLS",
    "CalibrationConfig",
    "CalibrationSet",
    "Cell",
    "EvalResult",
    "PTQError",
    "Workspace",
    "evaluate",
]
