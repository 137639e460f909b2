"""The suite's inputs and artifacts in one place: data, weights, and every model built from them.

Every artifact is built once (``cache.build_once``) under a key that covers what decides it: its
inputs' digests, the code that builds it and the versions of the libraries it is built with.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ptq_core import cache, sources
from ptq_core.backends import BuildInputs
from ptq_core.calibration import CalibrationConfig, CalibrationSet, calibration_set
from ptq_core.cifar10 import TEST_DATA_SHA256, Split, load_split
from ptq_core.formats import FORMATS
from ptq_core.matrix import CELLS, Cell
from ptq_core.models import DEFAULT_MODEL, get_model

MODELS_ENV = "PTQ_MODELS_DIR"
SHARED_DIR = "shared"


@functools.lru_cache(maxsize=4)
def _split(folder: Path, name: str) -> Split:
    return load_split(folder, name)


class ArtifactStore:
    """Builds every cell's artifact once from a store's FP32 models and calibration set (``quantized``).

    A store provides ``models_dir``, ``split``, ``calibration``, ``fp32``, ``fp32_module``, ``data_sha256``
    and, for ``ptq tune``, ``cells``, ``tuning_split`` and ``fixed_calibration``: :class:`Workspace` for the
    registered models on CIFAR-10, ``ptq_core.user.UserStore`` for a user's ONNX classifier on the user's images.
    """

    models_dir: Path

    def split(self, name: str = "test") -> Split:
        raise NotImplementedError

    def calibration(
        self, config: CalibrationConfig = CalibrationConfig(), model: str = DEFAULT_MODEL
    ) -> CalibrationSet:
        """The calibration set of ``config``, as ``model`` takes its images."""
        raise NotImplementedError

    def fp32(self, fmt: str, model: str = DEFAULT_MODEL) -> Path:
        raise NotImplementedError

    def fp32_module(self, model: str = DEFAULT_MODEL) -> Any:
        raise NotImplementedError

    def data_sha256(self, name: str = "test") -> str:
        """Digest of a split's images and labels: it keys every cached prediction made on them."""
        raise NotImplementedError

    def cells(self, model: str = DEFAULT_MODEL) -> tuple[Cell, ...]:
        """The cells of ``model`` the store builds."""
        raise NotImplementedError

    def tuning_split(self) -> str | None:
        """The labelled split that calibrates and validates (``ptq tune``); None: the store has none."""
        raise NotImplementedError

    def fixed_calibration(self) -> CalibrationConfig | None:
        """The one calibration set every cell is built from, whatever config is asked; None: each config's own."""
        raise NotImplementedError

    def artifact_path(self, cell: Cell, config: CalibrationConfig = CalibrationConfig()) -> Path:
        stem, ext = os.path.splitext(cell.artifact_name)
        return self.models_dir / f"{stem}{config.suffix}{ext}"

    def shared_path(self, cell: Cell, name: str, config: CalibrationConfig) -> Path:
        """What the cells of a model and backend share, e.g. ONNX Runtime's ranges of one calibrator."""
        path = self.models_dir / SHARED_DIR / f"{cell.model}-{cell.backend}-{name}"
        return path.with_name(f"{path.stem}{config.suffix}{path.suffix}")

    def build_inputs(self, cell: Cell, config: CalibrationConfig = CalibrationConfig()) -> tuple[BuildInputs, dict]:
        """What the cell's backend quantizes from, and the part of a cache key that covers it."""
        backend = cell.backend_spec
        calib = self.calibration(config, cell.model)
        fp32 = self.fp32(backend.source, cell.model)
        common = {
            "fp32_sha256": sources.file_digest(fp32),
            "calibration": asdict(calib.config),
            "calibration_sha256": calib.sha256,
            "code": cache.code_digest(
                [f"backends/{backend.name}", "backends/__init__", "calibration", "workspace", "cache"]
            ),
            "versions": cache.library_versions((*FORMATS[backend.source].libraries, *backend.libraries)),
        }

        def shared(name: str, build: Any) -> Path:
            path = self.shared_path(cell, name, calib.config)
            return cache.build_once(path, {"artifact": path.name, **common}, build)

        inputs = BuildInputs(
            fp32=fp32,
            module=functools.partial(self.fp32_module, cell.model),
            images=calib.images,
            shared=shared,
        )
        return inputs, common

    def quantized(self, cell: Cell, config: CalibrationConfig = CalibrationConfig()) -> Path:
        """The cell's 8-bit artifact, built once from the FP32 model and the calibration set."""
        inputs, common = self.build_inputs(cell, config)
        path = self.artifact_path(cell, CalibrationConfig(**common["calibration"]))  # a user's store has one set
        key = {"artifact": path.name, "cell": cell.id, **common}
        return cache.build_once(path, key, lambda tmp: cell.backend_spec.quantize(inputs, cell, tmp))


@dataclass(frozen=True)
class Workspace(ArtifactStore):
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

    def calibration(
        self, config: CalibrationConfig = CalibrationConfig(), model: str = DEFAULT_MODEL
    ) -> CalibrationSet:
        return _calibration(self.cifar10_dir, config, model)

    def fp32_module(self, model: str = DEFAULT_MODEL) -> Any:
        spec = get_model(model)
        return spec.build(getattr(self, spec.weights) if spec.weights else None)

    def fp32(self, fmt: str, model: str = DEFAULT_MODEL) -> Path:
        """The FP32 model exported in format ``fmt`` ("onnx", "pt2")."""
        spec, form = get_model(model), FORMATS[fmt]
        name = f"{spec.name}{form.suffix}"
        key = {
            "artifact": name,
            "weights_sha256": spec.weights_sha256(),
            "code": cache.code_digest([spec.module, "cifar10", f"formats/{form.module}", "formats/pt2"]),
            "versions": cache.library_versions(form.libraries),
        }
        return cache.build_once(
            self.models_dir / name, key, lambda tmp: form.export(self.fp32_module(model), tmp, spec)
        )

    def data_sha256(self, name: str = "test") -> str:
        return TEST_DATA_SHA256 if name == "test" else _split_digest(self.cifar10_dir, name)

    def cells(self, model: str = DEFAULT_MODEL) -> tuple[Cell, ...]:
        return tuple(c for c in CELLS if c.model == model)

    def tuning_split(self) -> str | None:
        return "train"

    def fixed_calibration(self) -> CalibrationConfig | None:
        return None


@functools.lru_cache(maxsize=16)
def _calibration(folder: Path, config: CalibrationConfig, model: str) -> CalibrationSet:
    """Drawn once per process (every cache lookup asks for it); read-only, as every caller shares it."""
    split = _split(folder, config.split)
    calib = calibration_set(split.images, split.labels, config, get_model(model))
    for array in (calib.images, calib.labels, calib.indices):
        if array is not None:
            array.setflags(write=False)
    return calib


@functools.lru_cache(maxsize=4)
def _split_digest(folder: Path, name: str) -> str:
    return _digest(_split(folder, name))


def _digest(split: Split) -> str:
    return hashlib.sha256(split.images.tobytes() + split.labels.astype("int64").tobytes()).hexdigest()
