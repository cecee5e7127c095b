"""fer_runtime: facial expression recognition with NumPy + ONNX Runtime (never torch).

>>> from fer_runtime import EmotionRecognizer
>>> rec = EmotionRecognizer()            # the bundled default model, sha256-checked, offline
>>> rec.predict("face.jpg")[0].label     # doctest: +SKIP
>>> rec.detect("photo.jpg")              # doctest: +SKIP  (whole frames: YuNet, bundled)

Public API: :class:`EmotionRecognizer` and its result types, the face detector and the pipeline
that composes the two, video (:class:`VideoAnalyzer`: tracks over time), image loading, the one preprocessing function :func:`preprocess` (with its
steps), the labels, the bundled-model registries, the model metadata contract and the exceptions.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fer_runtime.bundled import BUNDLED_DETECTORS, BUNDLED_MODELS, DEFAULT_DETECTOR, DEFAULT_MODEL, known_models
from fer_runtime.detector import Detection, FaceDetector
from fer_runtime.errors import FerError, InputError, MissingExtraError, ModelError, ModelIntegrityError, ProviderError
from fer_runtime.labels import LABELS, NUM_CLASSES
from fer_runtime.preprocessing import (
    PreprocessConfig,
    equalize_hist,
    faces_to_uint8,
    preprocess,
    resize,
    to_gray,
)
from fer_runtime.images import DEFAULT_MAX_PIXELS, load_image
from fer_runtime.metadata import MetadataError, ModelMetadata
from fer_runtime.pipeline import CropConfig, Face, FacePipeline
from fer_runtime.recognizer import EmotionRecognizer, ModelInfo
from fer_runtime.results import Prediction
from fer_runtime.analyzer import FrameResult, TrackedFace, VideoAnalyzer
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
    "CropConfig",
    "Detection",
    "EmotionRecognizer",
    "Face",
    "FaceDetector",
    "FacePipeline",
    "FerError",
    "FrameResult",
    "InputError",
    "MetadataError",
    "MissingExtraError",
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
    "equalize_hist",
    "faces_to_uint8",
    "load_image",
    "open_video",
    "preprocess",
    "resize",
    "to_gray",
]
