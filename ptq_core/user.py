"""A user's own ONNX classifier and images, checked once (``ptq_core.user_inputs``) and registered like a
built-in model.

``UserStore.open`` reads ``MODEL.onnx``, ``DATA`` (``images``, ``labels``) and optionally ``CALIB`` (``images``,
``labels`` optional), each an .npz or images read batch by batch (``ptq_core.shards``), registers the model as
the file and the images describe it, and scores the FP32 model on ``--data`` once (the predictions every later
step reuses). The store then quantizes and scores the
model like any registered one (``ptq_core.workspace.ArtifactStore``).
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ptq_core import cache, sources
from ptq_core.backends import BACKENDS
from ptq_core.calibration import CalibrationConfig, CalibrationSet, stratified_indices
from ptq_core.cifar10 import Split
from ptq_core.errors import PTQError
from ptq_core.evaluation import reason_of
from ptq_core.matrix import Cell, cells_of
from ptq_core.models import MODELS, Model, register_model
from ptq_core.shards import chunks
from ptq_core.user_data import Images, check_images, check_labels, read_data, value_range
from ptq_core.user_inputs import check_batch, check_fp32_scores, check_weights, num_classes_of, read_onnx, select_output
from ptq_core.user_pt2 import export_onnx, is_pt2, read_pt2
from ptq_core.workspace import ArtifactStore

DEFAULT_SAMPLES = 200
RUN_DIR = "run"  # under the cache folder: one sub-folder per model digest
EXPORTS_DIR = "exports"  # under it: the ONNX exports of users' .pt2 archives


def _no_module(weights: Any = None) -> Any:
    raise PTQError("a user's ONNX model has no PyTorch module: only backends that quantize ONNX files run on it")


def _no_weights() -> str:
    raise PTQError("a user's ONNX model is keyed by its file's digest")


def _model_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.]", "_", path.stem) or "model"
    return f"{name}_user" if name in MODELS and MODELS[name].dataset != "npz" else name


def _layout(dims: tuple[int | None, ...]) -> str:
    if len(dims) == 4 and dims[1] in (1, 3, 4):
        return "NCHW"
    if len(dims) == 4 and dims[3] in (1, 3, 4):
        return "NHWC"
    return "as the model's input"


def _digest(images: Images, labels: np.ndarray | None) -> str:
    """Of the bytes of every image in order (as ``images.tobytes()``), a chunk at a time, and the labels."""
    h = hashlib.sha256()
    for chunk in chunks(images):
        h.update(np.ascontiguousarray(chunk).tobytes())
    h.update(str((images.dtype, images.shape)).encode())
    if labels is not None:
        h.update(labels.astype(np.int64).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class UserStore(ArtifactStore):
    """A user's ONNX classifier, the images that score it and those that calibrate it."""

    onnx: Path
    onnx_sha256: str  # of the model with its external data
    models_dir: Path  # the cache folder of this model: <cache>/run/<name>-<digest>
    model: Model
    data: Split
    calib: CalibrationSet
    data_file: Path
    calibration_file: Path | None
    pool: Split | None = None  # the calibration file, when labelled: what ``ptq tune`` calibrates and validates on
    output: str = ""  # the output that holds the scores: the FP32 copy every backend quantizes has only this one
    pt2: Path | None = None  # the user's torch.export archive, when given: ``onnx`` is then its ONNX export
    digests: dict[str, str] = field(default_factory=dict, compare=False, hash=False)  # data_sha256, once per split

    @classmethod
    def open(
        cls,
        onnx: str | Path,
        data: str | Path,
        calibration: str | Path | None = None,
        samples: int = DEFAULT_SAMPLES,
        seed: int = 42,
        cache_dir: str | Path | None = None,
        output: str | None = None,
        option_prefix: str = "--",
        name: str | None = None,
    ) -> UserStore:
        """``output``: the model's output that holds the scores (default: its first); ``option_prefix``: how the
        caller's options are spelled in messages ("--" for ptq run and tune, "--ptq-" for the pytest plugin); ``name``:
        the model's name in cell ids (default: from the file's).

        Long because it is the order in which a user's files are read and refused, each step before anything is
        built or written: the model, its output, its weights, the images, the labels, the calibration set, the
        FP32 scores."""
        onnx, data = Path(onnx).resolve(), Path(data).resolve()
        root = Path(cache_dir) if cache_dir else sources.cache_dir() / RUN_DIR
        cache.name_folder(root, f"{option_prefix}cache DIR")  # what a cache error tells the user to change
        cache.remove_stale_temporaries(root)  # what builds killed in an earlier run left
        pt2 = onnx if is_pt2(onnx) else None
        if pt2 is not None:
            onnx = _exported(pt2, root, f"{option_prefix}model")
        spec, first, proto = read_onnx(onnx)
        output = select_output(onnx, proto, output, option_prefix)
        check_weights(onnx, proto)
        read, labels = read_data(data, "--data", need_labels=True)
        images = _as_array(read)
        assert labels is not None
        check_batch(onnx, spec, images)
        check_images(images, spec, f"--data {data}")
        classes = num_classes_of(onnx, spec, output, images, option_prefix)
        check_labels(labels, classes, f"--data {data}")
        calib_labels: np.ndarray | None = labels
        if calibration is None:
            calib_images, split = images, "data"
        else:
            calibration = Path(calibration).resolve()
            read, calib_labels = read_data(calibration, "--calibration", need_labels=False)
            calib_images = _as_array(read)
            check_images(calib_images, spec, f"--calibration {calibration}")
            if calib_labels is not None:
                check_labels(calib_labels, classes, f"--calibration {calibration}")
            split = "calibration"
        source = "--data" if calibration is None else "--calibration"
        calib = _calibration_set(calib_images, calib_labels, CalibrationConfig(samples, seed, split), source)
        sha = hashlib.sha256(proto.SerializeToString()).hexdigest()  # with its external data, if any
        folder = sha if output == first else hashlib.sha256(f"{sha}\0{output}".encode()).hexdigest()
        name = name or _model_name(pt2 or onnx)
        registered = name not in MODELS
        model = register_model(
            Model(
                name=name,
                dataset="npz",
                input_shape=tuple(images.shape[1:]),
                layout=_layout(spec.dims),
                input_range=value_range(images),
                num_classes=classes,
                reference_correct=0,  # a user's model has no pinned accuracy: it is measured
                module="user",
                build=_no_module,
                weights_sha256=_no_weights,
                input_dtype=spec.dtype.name,
                accepts=(spec.dtype.name,),
            )
        )
        store = cls(
            onnx=onnx,
            onnx_sha256=sha,
            models_dir=(root / f"{name}-{folder[:12]}").resolve(),
            model=model,
            data=Split("data", images, labels.astype(np.int64)),
            calib=calib,
            data_file=data,
            calibration_file=calibration,
            pool=None
            if calibration is None or calib_labels is None
            else Split("calibration", calib_images, calib_labels.astype(np.int64)),
            output=output,
            pt2=pt2,
        )
        try:
            check_fp32_scores(store, proto, option_prefix)
        except PTQError:
            if registered:  # a refused model is not left registered: the same file may come back with --output
                MODELS.pop(name, None)
            raise
        return store

    def split(self, name: str = "test") -> Split:
        return self.pool if name == "calibration" and self.pool is not None else self.data

    def calibration(self, config: CalibrationConfig = CalibrationConfig(), model: str = "") -> CalibrationSet:
        return self.calib

    def fp32(self, fmt: str, model: str = "") -> Path:
        archive = self.pt2
        if fmt == "pt2" and archive is not None:
            dest = self.models_dir / f"{self.model.name}.pt2"
            key = {"artifact": dest.name, "sha256": sources.file_digest(archive), "code": cache.code_digest(["user"])}
            return cache.build_once(dest, key, functools.partial(_copy, archive))
        if fmt != "onnx":
            raise PTQError(f"a user's model is an ONNX file; no backend that needs {fmt} runs on it: pass a .pt2")
        dest = self.models_dir / f"{self.model.name}.onnx"
        key = {
            "artifact": dest.name,
            "sha256": self.onnx_sha256,
            "output": self.output,
            "code": cache.code_digest(["user", "formats/onnx"]),
        }
        return cache.build_once(dest, key, lambda tmp: _normalised_copy(self.onnx, tmp, self.output))

    def fp32_module(self, model: str = "") -> Any:
        if self.pt2 is None:
            return _no_module()
        import torch

        from ptq_core.formats.pt2 import load

        unlifted = load(self.fp32("pt2")).module()  # its eval() raises "not supported yet": a plain GraphModule
        return torch.fx.GraphModule(unlifted, unlifted.graph)  # of the same graph and weights takes eval()

    def cells(self, model: str = "") -> tuple[Cell, ...]:
        """Every cell of every backend that quantizes ONNX files, and of those that quantize the .pt2 if given."""
        formats = ("onnx", "pt2") if self.pt2 else ("onnx",)
        return tuple(c for b in BACKENDS.values() if b.source in formats for c in cells_of(b, self.model.name))

    def tuning_split(self) -> str | None:
        return None if self.pool is None else self.pool.name

    def fixed_calibration(self) -> CalibrationConfig | None:
        return self.calib.config

    def data_sha256(self, name: str = "test") -> str:
        split = self.split(name)  # every cached prediction asks: hash the 100+ MB once
        if split.name not in self.digests:
            self.digests[split.name] = _digest(split.images, split.labels)
        return self.digests[split.name]

    @property
    def calibration_note(self) -> str:
        c = self.calib
        how = f"{len(c.images)} stratified" if c.labels is not None else f"{len(c.images)} randomly chosen (unlabelled)"
        if c.config.split == "data":
            return (
                f"{how} images of the scored data (seed {c.config.seed}): **these images also score the model**, so "
                "the accuracy is slightly optimistic; `held-out` accuracy leaves them out. Pass --calibration to "
                "keep them apart."
            )
        return f"{how} images of {self.calibration_file} (seed {c.config.seed}), apart from the scored data."


def _copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)


def _exported(pt2: Path, root: Path, option: str) -> Path:
    """The archive, checked, as an ONNX model: exported once into the cache, keyed by its digest and the exporter."""
    read_pt2(pt2, option)
    sha = sources.file_digest(pt2)
    dest = root / EXPORTS_DIR / f"{_model_name(pt2)}-{sha[:12]}.onnx"
    key = {
        "artifact": dest.name,
        "pt2_sha256": sha,
        "code": cache.code_digest(["user_pt2", "formats/pt2"]),
        "versions": cache.library_versions(("torch", "onnxscript", "onnx")),
    }
    try:
        return cache.build_once(dest, key, lambda tmp: export_onnx(pt2, tmp))
    except PTQError:
        raise
    except Exception as exc:  # the exporter's own errors: the ONNX backends cannot run without it
        raise PTQError(
            f"{option} {pt2}: torch.onnx.export of its program fails ({reason_of(exc)}); every ONNX backend "
            "quantizes that export: replace the operation it names, or export the ONNX file yourself and pass it"
        ) from exc


def _normalised_copy(src: Path, dest: Path, output: str = "") -> None:
    """The model as one self-contained file (external data inlined), without the exporter's provenance, and
    with ``output`` (the scores) its only output: the same computation of the scores, which every backend
    quantizes, every runtime scores (their first output) and every size is measured against."""
    import onnx

    from ptq_core.formats.onnx import strip_provenance

    proto = onnx.load(str(src))
    strip_provenance(proto)
    if output and [o.name for o in proto.graph.output] != [output]:
        _keep_only_output(proto.graph, output)
    onnx.save(proto, str(dest))


def _keep_only_output(graph: Any, output: str) -> None:
    """Drop the other outputs and every node and initializer only they need (the nodes are in topological
    order, as onnx.checker requires). A node's subgraphs may read any name of the graph: kept conservatively."""
    needed, kept = {output}, []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
            needed.update(_names_read_by_subgraphs(node))
    keep = {
        "node": kept[::-1],
        "output": [o for o in graph.output if o.name == output],
        "initializer": [t for t in graph.initializer if t.name in needed],
    }
    for name, items in keep.items():
        copies = [type(item)() for item in items]
        for copy, item in zip(copies, items, strict=True):
            copy.CopyFrom(item)  # before the field they belong to is cleared
        del getattr(graph, name)[:]
        getattr(graph, name).extend(copies)


def _names_read_by_subgraphs(node: Any) -> set[str]:
    import onnx

    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                names.update(inner.input)
                names.update(_names_read_by_subgraphs(inner))
    return names


def _as_array(images: Images) -> np.ndarray:
    """A split's images: Shards are read like an ndarray (len, shape, dtype, slices and index arrays)."""
    return cast(np.ndarray, images)


def _calibration_set(
    images: Images, labels: np.ndarray | None, config: CalibrationConfig, source: str = "--data"
) -> CalibrationSet:
    """``config.num_samples`` images (all, if fewer): stratified by label when labels are given."""
    n = min(config.num_samples, len(images))
    if labels is not None:
        classes, counts = np.unique(labels, return_counts=True)  # the classes it holds
        asked = f"--samples {config.num_samples}" + (f" (all {n} images)" if n < config.num_samples else "")
        if n < len(classes):
            raise PTQError(
                f"{asked}: a stratified calibration set takes at least one image of each of the {len(classes)} "
                f"classes in {source}: pass --samples {len(classes)} or more"
            )
        try:
            idx = stratified_indices(labels, n, config.seed, classes=classes)
        except PTQError as exc:  # a class has fewer images than its share of the stratified set
            short = int(np.argmin(counts))
            raise PTQError(
                f"{asked}: a stratified calibration set takes {n} images, about {n / len(classes):.1f} of each of "
                f"the {len(classes)} classes, but {source} has only {counts[short]} images of class "
                f"{classes[short]}: pass --samples {len(classes) * counts.min()} or fewer, or give {source} more "
                f"images of class {classes[short]}"
            ) from exc
    else:
        idx = np.sort(np.random.default_rng(config.seed).choice(len(images), n, replace=False))
    config = CalibrationConfig(n, config.seed, config.split)
    return CalibrationSet(
        np.ascontiguousarray(images[idx]), None if labels is None else labels[idx].astype(np.int64), idx, config
    )
