"""The suite's inputs and artifacts in one place: data, weights, and every model built from them."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ptq_core import cache, sources
from ptq_core.calibration import CalibrationConfig, CalibrationSet, calibration_set
from ptq_core.cifar10 import Split, load_split
from ptq_core.matrix import Cell

MODELS_ENV = "PTQ_MODELS_DIR"
FP32_ONNX, FP32_PT = "resnet8.onnx", "resnet8.pt"


@functools.lru_cache(maxsize=4)
def _split(folder: Path, name: str) -> Split:
    return load_split(folder, name)


@dataclass(frozen=True)
class Workspace:
    cifar10_dir: Path
    resnet8_h5: Path
    models_dir: Path

    @classmethod
    def locate(
        cls,
        cifar10_dir: str | Path | None = None,
        resnet8_h5: str | Path | None = None,
        models_dir: str | Path | None = None,
        download: bool = True,
    ) -> Workspace:
        models = Path(models_dir or os.environ.get(MODELS_ENV) or "models").expanduser().resolve()
        return cls(
            sources.find_cifar10(cifar10_dir, download).resolve(),
            sources.find_resnet8_h5(resnet8_h5, download).resolve(),
            models,
        )

    def split(self, name: str = "test") -> Split:
        return _split(self.cifar10_dir, name)

    def calibration(self, config: CalibrationConfig = CalibrationConfig()) -> CalibrationSet:
        split = self.split(config.split)
        return calibration_set(split.images, split.labels, config)

    def fp32_module(self) -> Any:
        from ptq_core.resnet8 import load_keras_h5

        return load_keras_h5(self.resnet8_h5)

    def _key(self, artifact: str, **extra: Any) -> dict[str, Any]:
        return {
            "artifact": artifact,
            "weights_sha256": sources.RESNET8_SHA256,
            "code": cache.code_digest(),
            "versions": cache.library_versions(),
            **extra,
        }

    def fp32_onnx(self) -> Path:
        from ptq_core.export import export_onnx

        return cache.build_once(
            self.models_dir / FP32_ONNX, self._key(FP32_ONNX), lambda tmp: export_onnx(self.fp32_module(), tmp)
        )

    def fp32_pt(self) -> Path:
        from ptq_core.export import export_program, save_program

        return cache.build_once(
            self.models_dir / FP32_PT,
            self._key(FP32_PT),
            lambda tmp: save_program(export_program(self.fp32_module()), tmp),
        )

    def fp32(self, framework: str) -> Path:
        return self.fp32_onnx() if framework == "onnxruntime" else self.fp32_pt()

    def artifact_path(self, cell: Cell, config: CalibrationConfig = CalibrationConfig()) -> Path:
        stem, ext = os.path.splitext(cell.artifact_name)
        return self.models_dir / f"{stem}{config.suffix}{ext}"

    def quantized(self, cell: Cell, config: CalibrationConfig = CalibrationConfig()) -> Path:
        """The cell's 8-bit artifact, built once from the FP32 model and the calibration set."""
        calib = self.calibration(config)
        path = self.artifact_path(cell, config)
        key = self._key(
            path.name,
            cell=cell.id,
            calibration=asdict(config),
            calibration_sha256=hashlib.sha256(calib.images.tobytes()).hexdigest(),
        )
        if cell.framework == "onnxruntime":
            from ptq_core.ort_quant import quantize_onnx, save_ranges

            fp32 = self.fp32_onnx()
            key["fp32_sha256"] = sources.file_digest(fp32)
            ranges_key = {k: v for k, v in key.items() if k not in ("artifact", "cell")} | {
                "calibrator": cell.calibrator
            }
            ranges = cache.build_once(
                self.models_dir / "ranges" / f"{cell.calibrator}{config.suffix}.json",
                ranges_key,
                lambda tmp: save_ranges(fp32, cell.calibrator, calib.images, tmp),
            )
            key["ranges_sha256"] = sources.file_digest(ranges)
            return cache.build_once(path, key, lambda tmp: quantize_onnx(fp32, tmp, cell, calib.images, ranges))
        from ptq_core.pt2e_quant import quantize_pytorch

        return cache.build_once(path, key, lambda tmp: quantize_pytorch(self.fp32_module(), tmp, cell, calib.images))


def get_calibration_data(
    num_samples: int = 200, seed: int = 42, split: str = "test", cifar10_dir: str | Path | None = None
) -> CalibrationSet:
    """``num_samples`` stratified images (float32 NHWC in [0, 255]) with their labels and split indices."""
    config = CalibrationConfig(num_samples, seed, split)
    folder = sources.find_cifar10(cifar10_dir).resolve()
    data = _split(folder, split)
    return calibration_set(data.images, data.labels, config)
