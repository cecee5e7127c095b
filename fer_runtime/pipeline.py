"""FacePipeline: a face detector and an expression classifier composed (detect, crop, classify).

The detector and the classifier never import each other or this module; this layer crops each
detected face the way FER2013's faces are framed and classifies all of a frame's faces in one
batch. ``EmotionRecognizer.detect`` is a thin entry over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fer_runtime.detector import Detection, FaceDetector, eye_angle
from fer_runtime.errors import ConfigError
from fer_runtime.frames import crop_gray, load_frame
from fer_runtime.images import FrameSource
from fer_runtime.preprocessing import ColorOrder, check_color_order
from fer_runtime.results import Face, Prediction


class Classifier(Protocol):
    """What the pipeline needs of a classifier (an :class:`EmotionRecognizer`): predictions for
    face crops that are already checked uint8 arrays."""

    def classify(self, crops: list[np.ndarray], color_order: ColorOrder) -> list[Prediction]: ...


@dataclass(frozen=True)
class CropConfig:
    """How a detector box becomes the face crop the classifier sees.

    The crop is centred on the box, moved down by ``shift`` box heights; it is square with side
    ``scale`` x the box's longer side (``square=True``), or the box enlarged by ``scale`` on each
    axis. ``align``: rotate the crop so that the eyes are level (roll correction from the
    landmarks). The defaults did best on validation faces pasted into scenes, for two classifiers
    that held those faces out, by margins inside the noise; roll correction gained 0.4-0.6 points
    with rolls up to 25 degrees (BENCHMARKS.md, "Whole frames").
    """

    scale: float = 0.95
    shift: float = -0.05
    square: bool = True
    align: bool = True

    def __post_init__(self) -> None:
        if not 0.2 <= self.scale <= 4.0 or not -1.0 <= self.shift <= 1.0:
            raise ConfigError(f"CropConfig scale must be in [0.2, 4] and shift in [-1, 1], got {self.scale}, {self.shift}")


def crop_face(frame: np.ndarray, det: Detection, crop: CropConfig, color_order: ColorOrder) -> np.ndarray:
    """The gray face crop (uint8, at the frame's resolution) for one detection."""
    x, y, w, h = det.box
    side = crop.scale * max(w, h)
    size = (side, side) if crop.square else (crop.scale * w, crop.scale * h)
    centre = (x + w / 2, y + h / 2 + crop.shift * h)
    angle = eye_angle(det.landmarks) if crop.align else 0.0
    return crop_gray(frame, centre, size, angle, color_order)


def clip_box(box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0 = int(round(min(max(0.0, box[0]), width))), int(round(min(max(0.0, box[1]), height)))
    x1, y1 = int(round(min(float(width), box[0] + box[2]))), int(round(min(float(height), box[1] + box[3])))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


class FacePipeline:
    """Detect faces in a frame and classify each: ``pipeline(frame) -> list[Face]``, best score first."""

    def __init__(self, classifier: Classifier, detector: FaceDetector | None = None, crop: CropConfig | None = None) -> None:
        self.classifier = classifier
        self.detector = detector if detector is not None else FaceDetector()
        self.crop = crop or CropConfig()

    def __call__(self, frame: FrameSource, color_order: ColorOrder | None = None) -> list[Face]:
        order = check_color_order(color_order or self.detector.color_order)
        arr = load_frame(frame, order, self.detector.max_pixels)  # loaded and checked once, here
        return self.classify(arr, self.detector.detect_array(arr, order), order)

    def classify(self, frame: np.ndarray, detections: list[Detection], color_order: ColorOrder) -> list[Face]:
        """Crop and classify given detections (found in this frame, or carried from an earlier one)
        in one batch; ``frame`` as :func:`~fer_runtime.frames.load_frame` returns it."""
        if not detections:
            return []
        crops = [crop_face(frame, det, self.crop, color_order) for det in detections]
        predictions = self.classifier.classify(crops, color_order)
        h, w = frame.shape[:2]
        return [Face(clip_box(d.box, h, w), d.score, d.landmarks, p, i)
                for i, (d, p) in enumerate(zip(detections, predictions))]
