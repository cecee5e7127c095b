"""Face detection for whole frames (``pip install 'fer-edge[detect]'``): OpenCV's bundled Haar cascade.

Detection runs on a copy of the frame downscaled to ``detect_width`` pixels wide (the cascade
dominates the cost and faces stay findable at that size); boxes are mapped back and the faces
are cropped from the full-resolution gray frame for classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_runtime.errors import InputError, MissingExtraError
from fer_runtime.preprocessing import ColorOrder, resize, to_gray

if TYPE_CHECKING:
    from fer_runtime.recognizer import EmotionRecognizer, Prediction

_EXTRA_HINT = "face detection needs OpenCV 4.x with Haar cascades: pip install 'fer-edge[detect]'"


@dataclass(frozen=True)
class Face:
    """A detected face: its box in frame pixels (x, y, width, height) and its prediction."""

    box: tuple[int, int, int, int]
    prediction: Prediction


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise MissingExtraError(_EXTRA_HINT) from exc
    if not hasattr(cv2, "CascadeClassifier"):  # the opencv-python 5.0 wheels dropped it
        raise MissingExtraError(f"this OpenCV ({cv2.__version__}) has no CascadeClassifier; {_EXTRA_HINT}")
    return cv2


@lru_cache(maxsize=1)
def _cascade() -> Any:
    cv2 = _cv2()
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise MissingExtraError(f"OpenCV could not load {path}; {_EXTRA_HINT}")
    return cascade


def find_faces(
    gray: np.ndarray, detect_width: int = 320, min_face: int = 48, scale_factor: float = 1.2, min_neighbors: int = 5
) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) in the coordinates of ``gray``.

    ``min_face`` is in frame pixels; the model sees 48x48 faces, so smaller ones carry little. The
    cascade's own window is 24 px, so the search never goes below that on the downscaled copy.
    """
    cascade = _cascade()
    scale = min(1.0, detect_width / gray.shape[1])
    small = resize_to(gray, int(round(gray.shape[0] * scale)), int(round(gray.shape[1] * scale))) if scale < 1 else gray
    min_size = max(24, int(round(min_face * scale)))
    found = cascade.detectMultiScale(small, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size))
    boxes = []
    for x, y, w, h in np.asarray(found, dtype=np.float64).reshape(-1, 4):
        boxes.append(tuple(int(round(v / scale)) for v in (x, y, w, h)))
    return boxes  # type: ignore[return-value]


def resize_to(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-averaging downscale of a uint8 frame to (height, width), via OpenCV when present."""
    return _cv2().resize(gray, (width, height), interpolation=_cv2().INTER_AREA)


def detect_and_classify(
    recognizer: EmotionRecognizer,
    frame: np.ndarray,
    color_order: ColorOrder,
    detect_width: int = 320,
    min_face: int = 48,
    scale_factor: float = 1.2,
) -> list[Face]:
    frame = np.asarray(frame)
    if frame.ndim not in (2, 3) or frame.size == 0:
        raise InputError(f"detect expects one frame (H, W) or (H, W, C), got shape {frame.shape}")
    gray = to_gray(frame, color_order)
    boxes = find_faces(gray, detect_width, min_face, scale_factor)
    if not boxes:
        return []
    crops = np.stack([resize(gray[y : y + h, x : x + w], recognizer.info.preprocess.size) for x, y, w, h in boxes])
    return [Face(box, pred) for box, pred in zip(boxes, recognizer.predict(crops))]
