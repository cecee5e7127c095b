"""EmotionRecognizer: one ONNX Runtime session, configured from the model's own metadata."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_runtime.bundled import BUNDLED_MODELS, DEFAULT_MODEL, read_bundled
from fer_runtime.errors import InputError, ModelError
from fer_runtime.labels import LABELS
from fer_runtime.preprocessing import ColorOrder, PreprocessConfig, preprocess
from fer_runtime.providers import resolve_providers, verify_applied

log = logging.getLogger(__name__)

METADATA_KEY = "fer_edge"  # metadata_props key holding the model's JSON description


@dataclass(frozen=True)
class Prediction:
    """One face's result."""

    label: str
    index: int
    score: float
    probabilities: dict[str, float] = field(repr=False)


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime read from the model: where it came from and its metadata."""

    source: str
    labels: tuple[str, ...]
    preprocess: PreprocessConfig
    temperature: float
    metadata: dict[str, Any]


def read_metadata(meta_map: dict[str, str], source: str) -> dict[str, Any]:
    raw = meta_map.get(METADATA_KEY)
    if raw is None:
        log.warning("%s has no %r metadata: assuming the FER2013 labels and default preprocessing", source, METADATA_KEY)
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{source}: its {METADATA_KEY!r} metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{source}: its {METADATA_KEY!r} metadata is not a JSON object")
    return meta


class EmotionRecognizer:
    """Classify facial expressions in face crops (or, with the ``detect`` extra, whole frames).

    ``EmotionRecognizer()`` loads the bundled default model (offline, sha256-checked);
    ``model`` may name another bundled model or be a path to an ``.onnx`` file made by
    ``fer-export``. ``providers``: ``"auto"`` (CUDA when onnxruntime-gpu offers it, else CPU) or a
    list such as ``["cuda", "cpu"]``. ``threads``: ONNX Runtime intra-op threads (default: its own).
    ``session``: an already made session (anything with ``run``/``get_inputs``/``get_outputs``/
    ``get_providers``/``get_modelmeta``), for tests or custom setups. ``session_config``: extra
    ONNX Runtime session config entries (e.g. ``{"session.intra_op.allow_spinning": "0"}``).
    Instances are thread-safe.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        session: Any = None,
        color_order: ColorOrder = "rgb",
        batch_size: int = 256,
        session_config: dict[str, str] | None = None,
    ) -> None:
        if color_order not in ("rgb", "bgr"):
            raise InputError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.color_order: ColorOrder = color_order
        self.batch_size = batch_size
        if session is not None:
            source = "injected session"
            self._session = session
        else:
            data, source = _read_model(model)
            self._session = _make_session(data, source, providers, threads, session_config or {})
        self._input_name, self._output_name = _check_io(self._session, source)
        meta = read_metadata(dict(self._session.get_modelmeta().custom_metadata_map), source)
        labels = tuple(meta.get("labels", LABELS))
        if len(labels) != _output_width(self._session):
            raise ModelError(f"{source}: metadata lists {len(labels)} labels but the model outputs {_output_width(self._session)}")
        pcfg = PreprocessConfig.from_dict(meta.get("preprocess", {}))
        temperature = float(meta.get("temperature", 1.0))
        if not (math.isfinite(temperature) and temperature > 0):
            raise ModelError(f"{source}: temperature must be a positive number, got {temperature}")
        self.info = ModelInfo(source, labels, pcfg, temperature, meta)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually applied."""
        return list(self._session.get_providers())

    def preprocess(self, images: Any, color_order: ColorOrder | None = None) -> np.ndarray:
        return preprocess(images, self.info.preprocess, color_order or self.color_order)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits for an already preprocessed float32 (N, 1, S, S) batch."""
        if len(batch) <= self.batch_size:
            return self._session.run([self._output_name], {self._input_name: batch})[0]
        outs = [
            self._session.run([self._output_name], {self._input_name: batch[i : i + self.batch_size]})[0]
            for i in range(0, len(batch), self.batch_size)
        ]
        return np.concatenate(outs)

    def predict_proba(self, images: Any, color_order: ColorOrder | None = None) -> np.ndarray:
        """Class probabilities (N, 7), temperature-calibrated when the model carries a temperature."""
        logits = self.logits(self.preprocess(images, color_order))
        if self.info.temperature != 1.0:
            logits = logits / np.float32(self.info.temperature)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        if not np.isfinite(p.sum()):  # one reduction catches any NaN or inf
            raise ModelError(f"{self.info.source} produced non-finite logits; the model is broken")
        return p

    def predict(self, images: Any, color_order: ColorOrder | None = None) -> list[Prediction]:
        """One :class:`Prediction` per face; ``images`` is one image, a list, or an (N, H, W) stack."""
        probs = self.predict_proba(images, color_order)
        return [self._prediction(row) for row in probs]

    def predict_one(self, image: np.ndarray, color_order: ColorOrder | None = None) -> Prediction:
        """The prediction for a single face image."""
        if isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim not in (2, 3)):
            raise InputError("predict_one takes a single image (H, W) or (H, W, C); use predict for batches")
        return self.predict(image, color_order)[0]

    def _prediction(self, row: np.ndarray) -> Prediction:
        i = int(row.argmax())
        return Prediction(self.labels[i], i, float(row[i]), {lab: float(p) for lab, p in zip(self.labels, row)})

    def detect(self, frame: np.ndarray, color_order: ColorOrder | None = None, **kwargs: Any) -> list[Any]:
        """Find faces in a whole frame (OpenCV Haar cascade, ``detect`` extra) and classify each."""
        from fer_runtime.detect import detect_and_classify

        return detect_and_classify(self, frame, color_order or self.color_order, **kwargs)

    def __repr__(self) -> str:
        return f"EmotionRecognizer(model={self.info.source!r}, providers={self.providers})"


def _read_model(model: str | os.PathLike[str] | None) -> tuple[bytes, str]:
    if model is None or (isinstance(model, str) and model in BUNDLED_MODELS):
        name = DEFAULT_MODEL if model is None else str(model)
        return read_bundled(name), f"bundled:{name}"
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file (bundled models: {', '.join(sorted(BUNDLED_MODELS))})")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc})") from exc


def _make_session(
    data: bytes, source: str, providers: str | Sequence[str], threads: int | None, config: dict[str, str]
) -> Any:
    import onnxruntime as ort

    plan = resolve_providers(providers, ort.get_available_providers())
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # ORT's own warnings would duplicate ours
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    try:
        session = ort.InferenceSession(data, sess_options=opts, providers=plan.providers)
    except Exception as exc:  # ORT raises its own exception types for invalid or truncated models
        raise ModelError(f"{source}: not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    verify_applied(plan, session.get_providers())
    return session


def _dims_ok(shape: Sequence[Any], expected: Sequence[int | None]) -> bool:
    if len(shape) != len(expected):
        return False
    return all(e is None or d == e for d, e in zip(shape, expected))


def _output_width(session: Any) -> int:
    return int(session.get_outputs()[0].shape[-1])


def _check_io(session: Any, source: str) -> tuple[str, str]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(f"{source}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    inp, out = inputs[0], outputs[0]
    if inp.type != "tensor(float)" or out.type != "tensor(float)":
        raise ModelError(f"{source}: expected float32 input and output, got {inp.type} -> {out.type}")
    if not _dims_ok(inp.shape, (None, 1, 48, 48)) or not _dims_ok(out.shape, (None, 7)):
        raise ModelError(
            f"{source}: expected input N x 1 x 48 x 48 and output N x 7, got {inp.shape} -> {out.shape}; "
            "export models with fer-export"
        )
    return inp.name, out.name
