"""FaceDetector: YuNet on ONNX Runtime, decoded and suppressed in NumPy.

YuNet is anchor-free: for each stride s in 8, 16, 32 and each cell (gx, gy) of the (H/s) x (W/s)
grid it predicts class and objectness scores (already sigmoid-activated), a box as centre offset
and log-size in stride units, and five landmark offsets. The face score is sqrt(cls * obj), the
decoding ``cv2.FaceDetectorYN`` uses; the tests check ours against it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fer_runtime.bundled import BUNDLED_DETECTORS, DEFAULT_DETECTOR, read_bundled_detector
from fer_runtime.errors import ConfigError, ModelError
from fer_runtime.frames import detector_blob, load_frame
from fer_runtime.images import DEFAULT_MAX_PIXELS, FrameSource, check_max_pixels
from fer_runtime.preprocessing import ColorOrder, check_color_order
from fer_runtime.session import (
    SPINNING_DEFAULT,
    PicklesByArguments,
    check_threads,
    make_session,
    read_model_bytes,
    remember_arguments,
)

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
# The face width (YuNet box, in working-size pixels) YuNet needs: on the test photos it found 92% of
# the faces at 24 px, 97% at 28 and all from 32 (83% at 20; `fer-bench detect`, BENCHMARKS.md "Whole frames").
# A frame is shrunk only as far as keeps faces of min_face pixels at least this wide.
DETECTABLE_PX = 24


@dataclass(frozen=True)
class Detection:
    """One face found in a frame, in frame pixels (floats; may reach past the frame's edges).

    ``box``: (x, y, width, height). ``landmarks``: five (x, y) points: right eye, left eye, nose
    tip, right and left mouth corner (the subject's right, so the right eye is on the image's left).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]


class FaceDetector(PicklesByArguments):
    """Find faces in whole frames with YuNet (bundled, sha256-checked; numpy + onnxruntime only).

    Frames are shrunk by a whole factor k before detection (exact area averaging, never enlarged):
    the largest k that keeps faces ``min_face`` pixels wide at least ``DETECTABLE_PX`` (24) wide, so
    that they stay findable (with the default ``min_face=20``: k = 1, the full size), but at least
    enough that the longer side is at most ``max_size`` pixels. Raising ``min_face`` is the speed
    knob: 48 halves the working size (1280x720: 9.4 instead of 20.8 ms on 2 threads, BENCHMARKS.md). Faces narrower than
    ``min_face`` are not reported.

    ``score_threshold``: the least face score (sqrt(cls * obj)) kept. ``nms_threshold``: boxes
    overlapping a better one by more than this IoU are dropped. ``model``, ``providers``,
    ``threads``, ``spinning``, ``session``, ``session_config``: as for :class:`EmotionRecognizer`.
    ``max_pixels``: larger frames are refused (decompression bombs, mistaken inputs); ``None`` allows any.
    """

    @remember_arguments
    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        min_face: int = 20,
        max_size: int = 1920,
        color_order: ColorOrder = "rgb",
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        spinning: bool = SPINNING_DEFAULT,
        session: Any = None,
        session_config: dict[str, str] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 < nms_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in [0, 1] and nms_threshold in (0, 1], got {score_threshold}, "
                              f"{nms_threshold}")
        if min_face < 1 or max_size < 32:
            raise ConfigError(f"min_face must be >= 1 and max_size >= 32, got {min_face}, {max_size}")
        check_color_order(color_order)
        check_threads(threads)
        check_max_pixels(max_pixels)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.min_face, self.max_size, self.max_pixels = int(min_face), int(max_size), max_pixels
        self.color_order: ColorOrder = color_order
        if session is None:
            data, source = read_model_bytes(model, BUNDLED_DETECTORS, DEFAULT_DETECTOR, read_bundled_detector)
            session = make_session(data, source, providers=providers, threads=threads, spinning=spinning,
                                   config=session_config)
        else:
            source = "injected session"
        self.source = source
        self._session = session
        self._input_name, self._outputs = _check_yunet_io(session, source)

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def shrink_factor(self, height: int, width: int) -> int:
        """The whole factor k a frame of this size is shrunk by before detection: the largest that keeps
        faces ``min_face`` px wide at least ``DETECTABLE_PX`` wide, and at least enough to bring the
        longer side down to ``max_size`` (that wins when the two disagree)."""
        fits = -(-max(height, width) // self.max_size)
        return min(257, max(1, fits, self.min_face // DETECTABLE_PX))

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a frame of this size is detected at."""
        k = self.shrink_factor(height, width)
        return max(1, height // k), max(1, width // k)

    def detect(self, frame: FrameSource, color_order: ColorOrder | None = None) -> list[Detection]:
        """Faces in one frame (array (H, W[, C]), image path, encoded bytes or PIL image), best score first."""
        order = check_color_order(color_order or self.color_order)
        return self.detect_array(load_frame(frame, order, self.max_pixels), order)

    def detect_array(self, arr: np.ndarray, color_order: ColorOrder) -> list[Detection]:
        """:meth:`detect` for a frame already loaded and checked by :func:`~fer_runtime.frames.load_frame`."""
        order = color_order
        k = self.shrink_factor(*arr.shape[:2])
        if min(arr.shape[:2]) < k:  # a sliver of a huge frame: nothing would be left to search
            return []
        blob = detector_blob(arr, order, k)
        boxes, scores, marks = decode(self.run(blob), blob.shape[2:], self.score_threshold)
        keep = nms(boxes, scores, self.nms_threshold)
        boxes, marks = boxes[keep] * np.float32(k), marks[keep] * np.float32(k)
        return [
            Detection(tuple(map(float, b)), float(s), tuple((float(x), float(y)) for x, y in m))  # type: ignore[arg-type]
            for b, s, m in zip(boxes, scores[keep], marks)
            if b[2] >= self.min_face
        ]

    def run(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        """YuNet's raw outputs for a float32 (1, 3, H, W) blob, H and W multiples of 32, by name."""
        values = self._session.run(self._outputs, {self._input_name: blob})
        return dict(zip(self._outputs, values))

    def __repr__(self) -> str:
        return (f"FaceDetector(model={self.source!r}, score_threshold={self.score_threshold}, "
                f"nms_threshold={self.nms_threshold}, min_face={self.min_face}, max_size={self.max_size})")


def _check_yunet_io(session: Any, source: str) -> tuple[str, list[str]]:
    inputs = session.get_inputs()
    names = [o.name for o in session.get_outputs()]
    wanted = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or sorted(names) != sorted(wanted):
        raise ModelError(f"{source}: not a YuNet face detector (expected one N x 3 x H x W input and outputs "
                         f"{', '.join(wanted)}; got {len(inputs)} input(s) and {', '.join(names)})")
    fixed = [d for d in inputs[0].shape[2:] if isinstance(d, int)]
    if fixed:  # frames of every size are padded to their own multiple of 32, so H and W must be free
        raise ModelError(f"{source}: a YuNet with a fixed input size ({inputs[0].shape}); FaceDetector needs "
                         "one with dynamic height and width, like the bundled yunet_s_dynamic.onnx")
    return inputs[0].name, wanted


@lru_cache(maxsize=32)
def _grid(rows: int, cols: int) -> np.ndarray:
    """(rows * cols, 2) cell coordinates (gx, gy), row-major like YuNet's outputs."""
    gy, gx = np.mgrid[0:rows, 0:cols]
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    grid.flags.writeable = False
    return grid


def decode(
    raw: dict[str, np.ndarray], blob_size: tuple[int, int], score_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet outputs for a blob of ``blob_size`` (H, W) -> boxes (M, 4) x, y, w, h, scores (M,) and
    landmarks (M, 5, 2), in blob pixels, for the cells scoring at least ``score_threshold``."""
    height, width = blob_size
    boxes, scores, marks = [], [], []
    for s in STRIDES:
        cls = np.clip(raw[f"cls_{s}"][0, :, 0], 0.0, 1.0)
        obj = np.clip(raw[f"obj_{s}"][0, :, 0], 0.0, 1.0)
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score >= score_threshold)
        if keep.size == 0:
            continue
        cells = _grid(height // s, width // s)[keep]
        bbox, kps = raw[f"bbox_{s}"][0, keep], raw[f"kps_{s}"][0, keep].reshape(-1, 5, 2)
        # exp in float64, rounded once to float32: the correctly rounded value, which any runtime's float64
        # exp reproduces (float32 exp implementations differ in the last bit; the portable models rely on this)
        size = np.exp(bbox[:, 2:4].astype(np.float64)).astype(np.float32) * s
        centre = (cells + bbox[:, 0:2]) * s
        boxes.append(np.concatenate([centre - size / 2, size], axis=1))
        marks.append((kps + cells[:, None, :]) * s)
        scores.append(score[keep])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(marks).astype(np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes (x, y, w, h), best score first; a
    box is dropped when its IoU with a kept, better-scoring box exceeds ``iou_threshold``."""
    order = np.argsort(-scores, kind="stable")
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)
    kept: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        kept.append(int(i))
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.intp)


def eye_angle(landmarks: Sequence[tuple[float, float]]) -> float:
    """The roll of a face in radians: the angle of the line from its right eye to its left eye."""
    (rx, ry), (lx, ly) = landmarks[0], landmarks[1]
    return math.atan2(ly - ry, lx - rx)
