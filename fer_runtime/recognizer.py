"""EmotionRecognizer: one ONNX Runtime session, configured from the model's own metadata."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fer_runtime.bundled import DEFAULT_MODEL, checkout_hint, model_registry, read_bundled
from fer_runtime.detector import FaceDetector
from fer_runtime.errors import ConfigError, InputError, ModelError
from fer_runtime.images import DEFAULT_MAX_PIXELS, FrameSource, ImageBatch, ImageSource, as_images, check_max_pixels
from fer_runtime.metadata import METADATA_KEY, ModelMetadata
from fer_runtime.pipeline import CropConfig, FacePipeline
from fer_runtime.precision import cache_key, check_precision, choose, time_sessions, variants
from fer_runtime.providers import CPU, resolve_providers
from fer_runtime.preprocessing import ColorOrder, PreprocessConfig, check_color_order, preprocess, preprocess_face
from fer_runtime.results import Face, Prediction
from fer_runtime.session import (
    SPINNING_DEFAULT,
    PicklesByArguments,
    check_threads,
    in_chunks,
    make_session,
    read_model_bytes,
    remember_arguments,
)
from fer_runtime.tta import Views, views_for

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelInfo:
    """What the runtime read from the model: where it came from, its checked metadata, and why this
    precision was loaded (``precision_reason``: e.g. "the CPU has avx512_vnni", "asked for", or the
    batch-1 timings that chose it; see :mod:`fer_runtime.precision`)."""

    source: str
    metadata: ModelMetadata
    precision_reason: str = "the file as given"

    @property
    def precision(self) -> str:
        """fp32, int8 or fp16: what the file is, from its metadata."""
        return self.metadata.precision or "fp32"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.metadata.preprocess

    @property
    def temperature(self) -> float:
        return self.metadata.temperature


def read_metadata(session: Any, source: str) -> ModelMetadata:
    """The session's model metadata, checked (a model without any reads as the defaults, with a warning)."""
    raw = dict(session.get_modelmeta().custom_metadata_map).get(METADATA_KEY)
    if raw is None:
        log.warning("%s has no %r metadata: assuming the FER2013 labels and default preprocessing", source, METADATA_KEY)
    return ModelMetadata.from_json(raw, source)


class ModelSession:
    """One classifier: its ONNX Runtime session, checked against the model's own metadata."""

    def __init__(self, session: Any, source: str) -> None:
        self.session = session
        self.input_name, self.output_name = _check_io(session, source)
        meta = read_metadata(session, source)
        if len(meta.labels) != _output_width(session):
            raise ModelError(f"{source}: metadata lists {len(meta.labels)} labels but the model outputs "
                             f"{_output_width(session)}")
        if not _dims_ok(session.get_inputs()[0].shape[2:], (meta.preprocess.size, meta.preprocess.size)):
            raise ModelError(f"{source}: metadata asks for {meta.preprocess.size}x{meta.preprocess.size} faces but the "
                             f"model takes {session.get_inputs()[0].shape[2:]}")
        self.info = ModelInfo(source, meta)

    def logits(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        return in_chunks(lambda part: self.session.run([self.output_name], {self.input_name: part})[0], batch,
                         batch_size)


class EmotionRecognizer(PicklesByArguments):
    """Classify facial expressions in face crops (:meth:`predict`) or whole frames (:meth:`detect`).

    ``EmotionRecognizer()`` loads the bundled default model (offline, sha256-checked);
    ``model`` may name another bundled model (:data:`BUNDLED_MODELS`), a checkout model (found in
    ``models_dir``, ``$FER_MODELS_DIR`` or the package's own source tree; :func:`known_models`
    lists them all) or be a path to an ``.onnx`` file made by ``fer-export``. Images may be arrays,
    image file paths or PIL images (see :meth:`predict`).

    Accuracy for time: ``tta`` classifies several views of each face and averages their calibrated
    probabilities (``"flip"``: the face and its mirror image, 2 passes; ``"crops"``: the face shifted
    by up to a pixel five ways, and their mirrors, 10 passes; see :data:`fer_runtime.tta.TTA_MODES`). ``ensemble``: model names
    or paths (instead of ``model``) whose calibrated probabilities are averaged; they must share
    labels and preprocessing. Both apply everywhere, :meth:`detect` and video included.

    ``precision``: ``"auto"`` loads, of a named model that comes in fp32 and int8 (``NAME`` and
    ``NAME-int8``), the one that is faster here: int8 where the CPU has integer dot-product
    instructions (VNNI, AMX, ARM's dot product), fp32 on CUDA, else the faster of the two timed once
    at first load and cached on disk (:mod:`fer_runtime.precision`); ``"fp32"`` or ``"int8"`` ask for
    one, ``"named"`` loads exactly the names given (a name ending in ``-int8`` is always taken as
    named). ``info.precision`` and ``info.precision_reason`` say what was loaded and why.

    ``providers``: ``"auto"`` (CUDA when onnxruntime-gpu offers it, else CPU) or a list such as
    ``["cuda", "cpu"]``. ``threads``: ONNX Runtime intra-op threads (``None``: one per core).
    ``spinning``: let idle ORT threads busy-wait (off by default: faster on small shared CPUs).
    ``session``: an already made session (anything with ``run``/``get_inputs``/``get_outputs``/
    ``get_providers``/``get_modelmeta``), for tests or custom setups. ``session_config``: extra
    ONNX Runtime session config entries. ``max_pixels``: larger images are refused before decoding
    (``None``: no limit). ``detector`` and ``crop``: the :class:`FaceDetector` and
    :class:`CropConfig` that :meth:`detect` uses (default: the bundled YuNet, made on first use
    with the same providers and threads). Instances are thread-safe, and pickle (for process
    pools): the copy is rebuilt from the same model and options in the process that unpickles it.
    """

    @remember_arguments
    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        session: Any = None,
        color_order: ColorOrder = "rgb",
        batch_size: int = 256,
        spinning: bool = SPINNING_DEFAULT,
        session_config: dict[str, str] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        detector: FaceDetector | None = None,
        crop: CropConfig | None = None,
        models_dir: str | os.PathLike[str] | None = None,
        tta: str | Views | None = None,
        ensemble: Sequence[str | os.PathLike[str]] | None = None,
        precision: str = "auto",
    ) -> None:
        self.color_order: ColorOrder = check_color_order(color_order)
        check_threads(threads)
        check_max_pixels(max_pixels)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.views = views_for(tta)
        self.precision = check_precision(precision)
        self._session_args = {"providers": providers, "threads": threads, "spinning": spinning}
        self._detector, self._crop, self._pipeline = detector, crop, None
        self._pipeline_lock = threading.Lock()
        if session is not None:
            self.members = [_as_asked(ModelSession(session, "injected session"), precision)]
        else:
            names = _members(model, ensemble)
            self.members = [self._load(name, models_dir, session_config) for name in names]
        self._session = self.members[0].session
        self.info = _ensemble_info(self.members)

    def _load(self, model: str | os.PathLike[str] | None, models_dir: str | os.PathLike[str] | None,
              session_config: dict[str, str] | None) -> ModelSession:
        registry = model_registry(models_dir)
        made: dict[str | os.PathLike[str], ModelSession] = {}

        def member(name: str | os.PathLike[str]) -> ModelSession:  # each file read and checked once
            if name not in made:
                data, source = read_model_bytes(name, registry, DEFAULT_MODEL,
                                                lambda n: read_bundled(n, models_dir), checkout_hint)
                made[name] = ModelSession(make_session(data, source, config=session_config, **self._session_args),  # type: ignore[arg-type]
                                          source)
            return made[name]

        name = DEFAULT_MODEL if model is None else model
        if not (isinstance(name, str) and (name in registry or variants(name, registry))):  # a file path
            return _as_asked(member(name), self.precision)
        threads, providers = self._session_args["threads"], _planned_providers(self._session_args["providers"])
        choice = choose(name, registry, self.precision, measure=lambda found: _time_members({p: member(n) for p, n in found.items()}),
                        cache_key=lambda found: cache_key({p: registry[n].sha256 for p, n in found.items()}, threads, providers),  # type: ignore[arg-type]
                        accelerator=any(p != CPU for p in providers))
        log.debug("%s: loading %s (%s: %s)", name, choice.name, choice.precision, choice.reason)
        chosen = member(choice.name)
        chosen.info = dataclasses.replace(chosen.info, precision_reason=choice.reason)
        return chosen

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually applied."""
        return list(self._session.get_providers())

    def preprocess(self, images: ImageBatch, color_order: ColorOrder | None = None) -> np.ndarray:
        """Images as the model takes them: float32 (N, 1, S, S), via :func:`fer_runtime.preprocess`."""
        order = color_order or self.color_order
        return preprocess(as_images(images, color_order=order, max_pixels=self.max_pixels), self.info.preprocess, order)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits of the model (one view, no temperature) for an already preprocessed float32
        (N, 1, S, S) batch; an ensemble has none of its own (use :meth:`probabilities`)."""
        if len(self.members) > 1:
            raise ConfigError("an ensemble has no logits of its own: use predict_proba or probabilities")
        return self.members[0].logits(batch, self.batch_size)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, 7) for an already preprocessed batch: each member model's
        temperature-scaled softmax, averaged over the test-time views and the ensemble's members."""
        if self.views.count == 1 and len(self.members) == 1:  # the plain path: one model, one view
            return calibrated(self.members[0].logits(batch, self.batch_size), self.info)
        views = self.views.apply(batch)
        flat = views.reshape(-1, *batch.shape[1:])
        total = sum(calibrated(m.logits(flat, self.batch_size), m.info) for m in self.members)
        probs = (total / len(self.members)).reshape(views.shape[0], len(batch), -1).mean(axis=0)
        return probs.astype(np.float32, copy=False)

    def predict_proba(self, images: ImageBatch, color_order: ColorOrder | None = None) -> np.ndarray:
        """Class probabilities (N, 7), temperature-calibrated when the model carries a temperature.
        One grey uint8 face of the model's size (48x48) takes a shorter path: nothing to convert,
        resize or check beyond its type, so it costs little more than the model."""
        size = self.info.preprocess.size
        if (type(images) is np.ndarray and images.dtype == np.uint8 and images.shape == (size, size)
                and (self.max_pixels is None or size * size <= self.max_pixels)):
            return self.probabilities(preprocess_face(images, self.info.preprocess))
        return self.probabilities(self.preprocess(images, color_order))

    def classify(self, crops: list[np.ndarray], color_order: ColorOrder) -> list[Prediction]:
        """One :class:`Prediction` per face crop that is already a checked uint8 array (what the
        pipeline cuts from a loaded frame); images from users go to :meth:`predict`."""
        batch = preprocess(crops, self.info.preprocess, color_order)
        return [Prediction(self.labels, row) for row in self.probabilities(batch)]

    def predict(self, images: ImageBatch, color_order: ColorOrder | None = None) -> list[Prediction]:
        """One :class:`Prediction` per face crop.

        ``images``: one image or a list of them, or an (N, H, W) stack. An image is an array (H, W)
        or (H, W, C) of 0-255 grey levels (uint8; uint16 is scaled; floats in 0-1 are refused), an
        image file path (EXIF orientation applied) or a PIL image (both need Pillow).
        ``color_order``: the channel order of colour arrays (default: the recognizer's).
        """
        probs = self.predict_proba(images, color_order)
        return [Prediction(self.labels, row) for row in probs]

    def predict_one(self, image: ImageSource, color_order: ColorOrder | None = None) -> Prediction:
        """The prediction for a single face image (an array, file path, encoded bytes or PIL image)."""
        if isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim not in (2, 3)):
            raise InputError("predict_one takes a single image (H, W) or (H, W, C); use predict for batches")
        return self.predict(image, color_order)[0]

    def detect(self, frame: FrameSource, color_order: ColorOrder | None = None) -> list[Face]:
        """The faces in a whole frame (array, image path or PIL image), each with its box, detector
        score, landmarks and :class:`Prediction`; best detector score first, ``[]`` when none."""
        return self.pipeline(frame, color_order or self.color_order)

    @property
    def pipeline(self) -> FacePipeline:
        """The :class:`FacePipeline` behind :meth:`detect` (its detector made on first use)."""
        if self._pipeline is not None:  # made once; the lock only guards its making
            return self._pipeline
        with self._pipeline_lock:
            if self._pipeline is None:
                detector = self._detector or FaceDetector(color_order=self.color_order, max_pixels=self.max_pixels,
                                                          **self._session_args)  # type: ignore[arg-type]
                self._pipeline = FacePipeline(self, detector, self._crop)
            return self._pipeline

    def __repr__(self) -> str:
        return f"EmotionRecognizer(model={self.info.source!r}, precision={self.info.precision!r}, providers={self.providers})"


def calibrated(logits: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Logits (N, K) -> probabilities, divided by the model's temperature first."""
    if info.temperature != 1.0:
        logits = logits / np.float32(info.temperature)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    total = p.sum(axis=1, keepdims=True)
    if not np.isfinite(total).all():  # a NaN or inf logit makes its row's sum NaN (exp(x - max) <= 1 otherwise)
        raise ModelError(f"{info.source} produced non-finite logits; the model is broken")
    p /= total
    return p


def _planned_providers(providers: str | Sequence[str]) -> list[str]:
    """The execution providers ``make_session`` will ask ONNX Runtime for, given ``providers`` (the
    precision choice depends on them)."""
    import onnxruntime as ort

    return resolve_providers(providers, ort.get_available_providers()).providers


def _time_members(members: dict[str, ModelSession]) -> dict[str, float]:
    """Batch-1 seconds of each variant (already checked against its metadata); a model that loads but
    cannot run is a ModelError, not ONNX Runtime's own exception."""
    size = next(iter(members.values())).info.preprocess.size
    try:
        return time_sessions({p: m.session for p, m in members.items()}, size)
    except Exception as exc:  # ORT raises its own exception types
        raise ModelError(f"timing {', '.join(m.info.source for m in members.values())} failed: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc


def _as_asked(member: ModelSession, precision: str) -> ModelSession:
    """A model given as a file path or an injected InferenceSession is used as it is: an explicit
    precision must match its metadata."""
    if precision not in ("auto", "named", member.info.precision):
        raise ConfigError(f"{member.info.source} is {member.info.precision}, not {precision}: precision= chooses "
                          "among a named model's variants; a file is used as it is")
    return member


def _members(model: str | os.PathLike[str] | None,
             ensemble: Sequence[str | os.PathLike[str]] | None) -> list[str | os.PathLike[str] | None]:
    if ensemble is None:
        return [model]
    if model is not None:
        raise ConfigError("give either model or ensemble, not both (an ensemble lists all of its models)")
    if isinstance(ensemble, (str, os.PathLike)) or len(ensemble) < 1:
        raise ConfigError(f"ensemble takes a list of model names or paths, got {ensemble!r}")
    return list(ensemble)


def _ensemble_info(members: list[ModelSession]) -> ModelInfo:
    """The recognizer's :class:`ModelInfo`: its model's, or for an ensemble the first member's
    metadata under a source naming every member (their labels and preprocessing must agree)."""
    first = members[0].info
    for other in members[1:]:
        if other.info.labels != first.labels or other.info.preprocess != first.preprocess:
            raise ConfigError(f"ensemble members must share labels and preprocessing: {first.source} and "
                              f"{other.info.source} differ")
    if len(members) == 1:
        return first
    reasons = "; ".join(f"{m.info.source}: {m.info.precision} ({m.info.precision_reason})" for m in members)
    return ModelInfo("ensemble(" + ", ".join(m.info.source for m in members) + ")", first.metadata, reasons)


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
