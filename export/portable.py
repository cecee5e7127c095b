"""``fer-export --portable``: a shipped classifier -> a crop model and a frame model any ONNX Runtime can run.

Starts from the shipped ``.onnx`` files (no torch, no checkpoint): the classifier (bundled, a checkout
model, or a path) and the bundled YuNet detector. Steps, on every export: read and hash the sources,
build the two graphs (:mod:`fer_export.portable_graph`), attach metadata, ``onnx.checker`` (full
check), parity against the Python runtime on synthetic crops and frames (and the test photos inside
a source checkout), ONNX Runtime Mobile twins (``.ort``) compared with their ``.onnx`` files, then
everything is moved into place together; a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_export.onnx_export import ExportError, staging
from fer_runtime import __version__
from fer_runtime.bundled import (
    BUNDLED_DETECTORS,
    DEFAULT_DETECTOR,
    checkout_hint,
    model_registry,
    read_bundled,
    read_bundled_detector,
)
from fer_runtime.detector import FaceDetector
from fer_runtime.errors import ModelError
from fer_runtime.metadata import METADATA_KEY, ModelMetadata
from fer_runtime.pipeline import CropConfig, crop_face
from fer_runtime.portable import PORTABLE_FORMAT, PORTABLE_KEY, PortableCropModel, PortableFrameModel
from fer_runtime.preprocessing import preprocess, resize
from fer_runtime.recognizer import EmotionRecognizer
from fer_runtime.session import read_model_bytes

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PROBABILITY_TOLERANCE = 1e-5  # crop model vs EmotionRecognizer.predict_proba
FRAME_PROBABILITY_TOLERANCE = 1e-2  # frame model vs the Python pipeline, per face
BOX_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class Source:
    """A model file the portable models are built from: its bytes, a name, and its sha256."""

    name: str
    data: bytes
    file: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_sources(model: str) -> tuple[Source, Source]:
    """The classifier (a name from model_registry(): the wheel's, or a checkout's through $FER_MODELS_DIR or
    the package's source tree; or a path) and the bundled detector, sha256-checked."""
    registry = model_registry()
    try:
        data, where = read_model_bytes(model, registry, model, read_bundled, checkout_hint)
    except ModelError as exc:
        raise ExportError(str(exc)) from exc
    name = model if model in registry else _name_of(Path(model))
    detector = BUNDLED_DETECTORS[DEFAULT_DETECTOR]
    return Source(name, data, where), Source(DEFAULT_DETECTOR, read_bundled_detector(), detector.filename)


def _name_of(path: Path) -> str:
    """A name for a model file: its stem, or for the checkout's models/<name>/model[.int8].onnx, <name>[-int8]."""
    stem = path.stem
    if stem == "model" or stem.startswith("model."):
        return path.resolve().parent.name + stem[len("model"):].replace(".", "-")
    return stem


# --- building ------------------------------------------------------------------------------------

def classifier_spec(source: Source) -> Any:
    import onnx

    from fer_export.portable_graph import ClassifierSpec

    model = onnx.load_from_string(source.data)
    raw = {p.key: p.value for p in model.metadata_props}.get(METADATA_KEY)
    meta = ModelMetadata.from_json(raw, source.file)
    return ClassifierSpec(model, meta.labels, meta.preprocess, meta.temperature), meta


def yunet_at_opset(source: Source) -> Any:
    """The detector converted to the portable graphs' opset (the bundled file is opset 11)."""
    import onnx
    from onnx import version_converter

    from fer_export.portable_graph import OPSET

    return version_converter.convert_version(onnx.load_from_string(source.data), OPSET)


def describe(kind: str, classifier: Source, meta: ModelMetadata, detector: Source | None, settings: Any,
             model: Any) -> dict[str, Any]:
    """The JSON a caller needs: what goes in and comes out, the labels, and where the model came from."""
    doc: dict[str, Any] = {
        "format": PORTABLE_FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "package_version": __version__,
        "labels": list(meta.labels), "temperature": meta.temperature, "preprocess": meta.preprocess.to_dict(),
        "source": {"name": classifier.name, "file": classifier.file, "sha256": classifier.sha256,
                   "arch": meta.arch, "precision": meta.precision},
        "inputs": {i.name: _shape(i) for i in model.graph.input},
        "outputs": {o.name: _shape(o) for o in model.graph.output},
        "color_order": "rgb",
    }
    if detector is not None:
        doc["detector"] = {"name": detector.name, "file": detector.file, "sha256": detector.sha256}
        doc["settings"] = asdict(settings)
    return doc


def _shape(value: Any) -> dict[str, Any]:
    import onnx

    t = value.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in t.shape.dim]
    return {"type": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}


def attach(model: Any, description: dict[str, Any]) -> Any:
    entry = model.metadata_props.add()
    entry.key, entry.value = PORTABLE_KEY, json.dumps(description, sort_keys=True)
    model.producer_version = __version__
    return model


def build(classifier: Source, detector: Source) -> dict[str, Any]:
    """The two portable models (``onnx.ModelProto``), checked with onnx.checker, by kind."""
    import onnx

    from fer_export.portable_graph import FrameSettings, build_crop_model, build_frame_model

    spec, meta = classifier_spec(classifier)
    settings = FrameSettings.from_runtime()
    crop = build_crop_model(spec)
    frame = build_frame_model(spec, yunet_at_opset(detector), settings)
    models = {"crop": attach(crop, describe("crop", classifier, meta, None, None, crop)),
              "frame": attach(frame, describe("frame", classifier, meta, detector, settings, frame))}
    for kind, model in models.items():
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"onnx.checker rejected the {kind} model: {str(exc).splitlines()[0]}") from exc
    return models


# --- parity with the Python runtime --------------------------------------------------------------

def synthetic_crops(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """uint8 RGB crops of sizes 1x1 to 400x400: noise, flat, two-level, and gradients."""
    crops = [np.zeros((1, 1, 3), np.uint8), np.full((48, 48, 3), 77, np.uint8), np.full((400, 400, 3), 255, np.uint8)]
    while len(crops) < count:
        h, w = (int(v) for v in rng.integers(1, 401, 2))
        kind = len(crops) % 4
        if kind == 0:
            crop = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            crop = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
        elif kind == 2:
            levels = rng.integers(0, 256, 2)
            crop = np.repeat(np.where(rng.random((h, w, 1)) < 0.5, levels[0], levels[1]).astype(np.uint8), 3, axis=2)
        else:
            ramp = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.2, 1, h)[:, None, None]
            crop = np.clip(ramp + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        crops.append(crop)
    return crops


@dataclass
class CropParity:
    crops: int = 0
    preprocessing_identical: int = 0
    worst_probability_diff: float = 0.0
    label_agreement: float = 1.0
    tolerance: float = PROBABILITY_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.preprocessing_identical == self.crops and self.worst_probability_diff <= self.tolerance

    def line(self) -> str:
        return (f"crop model: {self.preprocessing_identical}/{self.crops} crops preprocessed bit for bit as "
                f"fer_runtime.preprocess, max |probability diff| {self.worst_probability_diff:.1e} "
                f"(limit {self.tolerance:.0e}), labels agree on {self.label_agreement:.2%}")


def crop_parity(model: PortableCropModel, recognizer: EmotionRecognizer, crops: Iterable[np.ndarray]) -> CropParity:
    """The crop model against fer_runtime.preprocess and EmotionRecognizer.predict_proba, one crop per call."""
    report, agree = CropParity(), 0
    for crop in crops:
        out = model.run(crop[None])
        expected_x = preprocess(crop, recognizer.info.preprocess)
        expected_p = recognizer.predict_proba(crop)
        report.crops += 1
        report.preprocessing_identical += int(np.array_equal(out["preprocessed"], expected_x))
        report.worst_probability_diff = max(report.worst_probability_diff,
                                            float(np.abs(out["probabilities"] - expected_p).max()))
        agree += int(out["label"][0] == expected_p[0].argmax())
    report.label_agreement = agree / max(report.crops, 1)
    return report


@dataclass(frozen=True)
class ReferenceFaces:
    """What the Python runtime finds in a frame: detections, resized grey crops (before equalization), probabilities."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    crops: np.ndarray
    probabilities: np.ndarray


def reference_faces(frame: np.ndarray, recognizer: EmotionRecognizer, detector: FaceDetector,
                    crop: CropConfig | None = None) -> ReferenceFaces:
    """FacePipeline's steps, from the detector's unchanged Detection type and crop_face."""
    found = detector.detect(frame)
    cfg = crop or CropConfig()
    size = recognizer.info.preprocess.size
    crops = [crop_face(frame, d, cfg, "rgb") for d in found]
    probs = recognizer.predict_proba(crops) if crops else np.zeros((0, len(recognizer.labels)), np.float32)
    return ReferenceFaces(np.array([d.box for d in found], np.float32).reshape(-1, 4),
                          np.array([d.score for d in found], np.float32),
                          np.array([d.landmarks for d in found], np.float32).reshape(-1, 5, 2),
                          np.array([resize(c, size) for c in crops], np.uint8).reshape(-1, size, size), probs)


@dataclass
class FrameParity:
    frames: int = 0
    faces: int = 0
    count_mismatches: int = 0
    worst_box_diff: float = 0.0
    crops_identical: int = 0
    label_agreement: float = 1.0
    worst_probability_diff: float = 0.0
    tolerance: float = FRAME_PROBABILITY_TOLERANCE

    @property
    def passed(self) -> bool:
        return (self.count_mismatches == 0 and self.worst_box_diff <= BOX_TOLERANCE_PX
                and self.label_agreement >= 0.99 and self.worst_probability_diff <= self.tolerance)

    def line(self) -> str:
        return (f"frame model: {self.frames} frames, {self.faces} faces; face counts differ on {self.count_mismatches}, "
                f"max |box diff| {self.worst_box_diff:.1e} px, {self.crops_identical}/{self.faces} crops identical, "
                f"labels agree on {self.label_agreement:.2%}, max |probability diff| {self.worst_probability_diff:.1e}")


def frame_parity(model: PortableFrameModel, recognizer: EmotionRecognizer, detector: FaceDetector,
                 frames: Iterable[np.ndarray]) -> FrameParity:
    """The frame model against the Python pipeline (FaceDetector.detect, crop_face, predict_proba)."""
    report, agree = FrameParity(), 0
    for frame in frames:
        out = model.run(frame)
        ref = reference_faces(frame, recognizer, detector)
        report.frames += 1
        if len(out["boxes"]) != len(ref.boxes):
            report.count_mismatches += 1
            continue
        report.faces += len(ref.boxes)
        if not len(ref.boxes):
            continue
        report.worst_box_diff = max(report.worst_box_diff, float(np.abs(out["boxes"] - ref.boxes).max()))
        report.crops_identical += int(sum(np.array_equal(a, b) for a, b in zip(out["crops"], ref.crops)))
        report.worst_probability_diff = max(report.worst_probability_diff,
                                            float(np.abs(out["probabilities"] - ref.probabilities).max()))
        agree += int((out["labels"] == ref.probabilities.argmax(1)).sum())
    report.label_agreement = agree / report.faces if report.faces else 1.0
    return report


def checkout_photos() -> list[np.ndarray]:
    """The test photos of a source checkout as RGB arrays ([] outside one or without Pillow)."""
    from fer_runtime.bundled import SOURCE_TREE

    try:
        from PIL import Image
    except ImportError:
        return []
    out = []
    for path in sorted((SOURCE_TREE / "tests" / "data" / "photos").glob("*.jpg")):
        with Image.open(path) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def parity_frames(rng: np.random.Generator, photos: list[np.ndarray]) -> list[np.ndarray]:
    """Random frames of odd sizes (one past the 1920 px working limit, so shrunk), and the photos
    as they are, mirrored and rolled by a quarter turn."""
    frames = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in ((1, 1), (37, 501), (300, 2000))]
    for photo in photos:
        frames += [photo, photo[:, ::-1].copy(), np.ascontiguousarray(np.rot90(photo))]
    return frames


# --- ONNX Runtime Mobile twins ---------------------------------------------------------------------

def convert_to_ort(folder: Path) -> list[Path]:
    """The .ort twin of every .onnx in ``folder`` and the required-operators config for reduced builds
    (onnxruntime.tools.convert_onnx_models_to_ort, 'Fixed' style: ORT Mobile's CPU provider)."""
    cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(folder),
           "--output_dir", str(folder), "--optimization_style", "Fixed", "--target_platform", "arm"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ExportError(f"ORT format conversion failed: {last[0][:300]}")
    configs = sorted(folder.glob("*.config"))
    for config in configs:  # it names the models by their (temporary) paths: keep the file names only
        config.write_text(config.read_text().replace(f"{folder}{os.sep}", ""))
    return sorted(folder.glob("*.ort")) + configs


# What two runs of a portable model (another runtime, an .ort twin) must agree on: output -> largest
# allowed |difference|. YuNet's and the classifier's float sums depend on the platform's kernels, so
# detector outputs move by a few 1e-5 px and a crop may change by one grey level at a rounding edge.
CROP_CHECKS = {"preprocessed": 0.0, "probabilities": PROBABILITY_TOLERANCE}
FRAME_CHECKS = {"boxes": BOX_TOLERANCE_PX, "landmarks": BOX_TOLERANCE_PX, "scores": 1e-3,
                "probabilities": FRAME_PROBABILITY_TOLERANCE}


def output_diffs(runs: Iterable[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
                 checks: dict[str, float]) -> dict[str, float]:
    """The largest |difference| of each checked output over pairs of runs (inf where shapes differ)."""
    worst = dict.fromkeys(checks, 0.0)
    for a, b in runs:
        for name in checks:
            if a[name].shape != b[name].shape:
                worst[name] = float("inf")
            elif a[name].size:
                diff = np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)).max()
                worst[name] = max(worst[name], float(diff))
    return worst


def within(diffs: dict[str, float], checks: dict[str, float]) -> bool:
    return all(diffs[name] <= limit for name, limit in checks.items())


# --- the export ----------------------------------------------------------------------------------

@dataclass
class PortableReport:
    model: str
    sha256: str
    files: list[str] = field(default_factory=list)
    crop: CropParity | None = None
    frame: FrameParity | None = None
    ort_diffs: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.model} (sha256 {self.sha256[:12]}...): wrote {', '.join(self.files)} in {self.seconds:.1f} s"]
        lines += [r.line() for r in (self.crop, self.frame) if r is not None]
        for kind, diffs in self.ort_diffs.items():
            shown = ", ".join(f"{name} {value:.1e}" for name, value in diffs.items())
            lines.append(f"{kind} .ort twin vs .onnx, max |diff|: {shown}")
        return "\n".join(lines)


def export_portable(model: str, out_dir: str | Path, *, ort_format: bool = True, crops: int = 64,
                    threads: int | None = None) -> PortableReport:
    """Write ``out_dir/NAME.crop.onnx`` and ``NAME.frame.onnx`` (+ ``.ort`` twins and
    ``required_operators.config``) for ``model`` (a known model name or an .onnx path), checked.

    Raises :class:`ExportError` when anything fails; nothing is left in ``out_dir`` then."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ExportError(f"{out}: output folder is not writable")
    classifier, detector = read_sources(model)
    models = build(classifier, detector)
    report = PortableReport(classifier.name, classifier.sha256)
    with staging(out) as stage:
        paths = {kind: stage / f"{classifier.name}.{kind}.onnx" for kind in models}
        for kind, proto in models.items():
            paths[kind].write_bytes(proto.SerializeToString())
        recognizer = EmotionRecognizer(session=_session(classifier.data, classifier.file, threads))
        crop_model = PortableCropModel(paths["crop"], threads=threads)
        frame_model = PortableFrameModel(paths["frame"], threads=threads)
        rng = np.random.default_rng(0)
        photos = checkout_photos()
        report.crop = crop_parity(crop_model, recognizer, synthetic_crops(rng, crops) + photos)
        frames = parity_frames(rng, photos)
        report.frame = frame_parity(frame_model, recognizer, FaceDetector(threads=threads, max_pixels=None), frames)
        for part in (report.crop, report.frame):
            if not part.passed:
                raise ExportError(f"parity check failed: {part.line()}")
        written = list(paths.values())
        if ort_format:
            extra = convert_to_ort(stage)
            twins = {"crop": (crop_model, PortableCropModel(paths["crop"].with_suffix(".ort"), threads=threads),
                              [c[None] for c in synthetic_crops(rng, 8)], CROP_CHECKS),
                     "frame": (frame_model, PortableFrameModel(paths["frame"].with_suffix(".ort"), threads=threads),
                               frames, FRAME_CHECKS)}
            for kind, (onnx_model, ort_model, inputs, checks) in twins.items():
                diffs = output_diffs(((onnx_model.run(x), ort_model.run(x)) for x in inputs), checks)
                report.ort_diffs[kind] = diffs
                if not within(diffs, checks):
                    raise ExportError(f"the {kind} model's .ort twin differs from its .onnx file: {diffs}")
            written += extra
        for src in written:  # everything validated: move all files into place together
            os.replace(src, out / src.name)
        report.files = [str(out / p.name) for p in written]
    report.seconds = time.perf_counter() - t0
    log.info("%s", report.summary())
    return report


def _session(data: bytes, source: str, threads: int | None) -> Any:
    from fer_runtime.session import make_session

    return make_session(data, source, providers="cpu", threads=threads)
