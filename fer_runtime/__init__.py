"""fer_runtime: facial expression recognition with NumPy + ONNX Runtime (never torch).

>>> from fer_runtime import EmotionRecognizer
>>> rec = EmotionRecognizer()            # the bundled default model, sha256-checked, offline
>>> rec.predict("face.jpg")[0].label     # doctest: +SKIP
>>> rec.detect("photo.jpg")              # doctest: +SKIP  (whole frames: YuNet, bundled)

Public API: :class:`EmotionRecognizer`, the face detector and the pipeline that composes the two,
video (:class:`VideoAnalyzer`: tracks over time); one result model (:class:`Prediction`,
:class:`Face`, :class:`TrackedFace`, :class:`FrameResult`, each with ``to_dict()`` and a flat row
form; :func:`to_dataframe`, :func:`annotate`); image loading and the input types
(:data:`ImageSource`, :data:`FrameSource`, :data:`ImageBatch`); the one preprocessing function
:func:`preprocess` (with its steps); the labels; the models that can be named
(:func:`known_models`) and the precision chosen per CPU (:data:`PRECISIONS`, :func:`this_cpu`); the
model metadata contract; the exceptions.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fer_runtime.analyzer import VideoAnalyzer
from fer_runtime.annotate import annotate
from fer_runtime.bundled import (
    BUNDLED_DETECTORS,
    BUNDLED_MODELS,
    DEFAULT_DETECTOR,
    DEFAULT_MODEL,
    ModelEntry,
    known_models,
)
from fer_runtime.detector import Detection, FaceDetector
from fer_runtime.errors import (
    ConfigError,
    FerError,
    InputError,
    MissingExtraError,
    ModelError,
    ModelIntegrityError,
    ProviderError,
)
from fer_runtime.images import DEFAULT_MAX_PIXELS, FrameSource, ImageBatch, ImageSource, load_image
from fer_runtime.labels import LABELS, NUM_CLASSES
from fer_runtime.metadata import MetadataError, ModelMetadata
from fer_runtime.pipeline import CropConfig, FacePipeline
from fer_runtime.precision import PRECISIONS, this_cpu
from fer_runtime.preprocessing import (
    PreprocessConfig,
    equalize_hist,
    faces_to_uint8,
    preprocess,
    resize,
    to_gray,
)
from fer_runtime.recognizer import EmotionRecognizer, ModelInfo
from fer_runtime.results import Face, FrameResult, Prediction, TrackedFace
from fer_runtime.rows import columns, to_dataframe
from fer_runtime.video import VideoError, open_video

try:
    __version__ = version("fer-edge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "BUNDLED_DETECTORS",
    "BUNDLED_MODELS",
    "DEFAULT_DETECTOR",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "LABELS",
    "NUM_CLASSES",
    "PRECISIONS",
    "ConfigError",
    "CropConfig",
    "Detection",
    "EmotionRecognizer",
    "Face",
    "FaceDetector",
    "FacePipeline",
    "FerError",
    "FrameResult",
    "FrameSource",
    "ImageBatch",
    "ImageSource",
    "InputError",
    "MetadataError",
    "MissingExtraError",
    "ModelEntry",
    "ModelError",
    "ModelInfo",
    "ModelIntegrityError",
    "ModelMetadata",
    "Prediction",
    "PreprocessConfig",
    "ProviderError",
    "TrackedFace",
    "VideoAnalyzer",
    "VideoError",
    "known_models",
    "__version__",
    "annotate",
    "columns",
    "equalize_hist",
    "faces_to_uint8",
    "load_image",
    "open_video",
    "preprocess",
    "resize",
    "this_cpu",
    "to_dataframe",
    "to_gray",
]
