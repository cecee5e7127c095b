"""Whole frames in pure NumPy: validation, resampling to a working size, detector input, face crops.

Nothing here converts or copies a whole full-resolution uint8 frame: the detector gets the frame
resampled straight to its working size (the colour channels reordered on the small copy), and grey
conversion happens only on the face crops.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fer_runtime.images import load_image
from fer_runtime.preprocessing import ColorOrder, as_uint8, to_gray


def load_frame(frame: Any, color_order: ColorOrder, max_pixels: int | None) -> np.ndarray:
    """A frame (array, image path or PIL image) as uint8 (H, W) or (H, W, C), C in 1-4: read and
    checked (shape, size limit) by :func:`fer_runtime.images.load_image`, values by the preprocessing rules."""
    return as_uint8(load_image(frame, color_order=color_order, max_pixels=max_pixels))


def shrink(frame: np.ndarray, k: int) -> np.ndarray:
    """uint8 (H, W[, C]) -> float32 (H // k, W // k[, C]): the means of k x k blocks, i.e. exact area
    averaging by a whole factor (``cv2.INTER_AREA`` for such factors), in a few vectorised sums."""
    if k == 1:
        return frame.astype(np.float32)
    if not 1 < k <= 257:
        raise ValueError(f"shrink factor must be in 1-257, got {k}")
    h, w = (frame.shape[0] // k) * k, (frame.shape[1] // k) * k
    rows = sum(frame[i:h:k, :w].astype(np.uint32) for i in range(k))  # k^2 x 255 needs more than 16 bits
    blocks = sum(rows[:, j:w:k] for j in range(k))
    return blocks.astype(np.float32) * np.float32(1.0 / (k * k))


def detector_blob(frame: np.ndarray, color_order: ColorOrder, k: int, multiple: int = 32) -> np.ndarray:
    """The frame shrunk by the whole factor ``k`` as float32 (1, 3, H', W') BGR 0-255, zero-padded at
    the bottom and right to multiples of ``multiple`` (how ``cv2.FaceDetectorYN`` feeds YuNet)."""
    # At full size the uint8 frame goes straight into the blob (the assignment converts it).
    small = frame if k == 1 else shrink(frame, k)
    height, width = small.shape[:2]
    ph, pw = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    blob = np.zeros((1, 3, ph, pw), np.float32)
    if small.ndim == 2 or small.shape[2] <= 2:  # gray (+ alpha): the same level in B, G and R
        blob[0, :, :height, :width] = small if small.ndim == 2 else small[:, :, 0]
        return blob
    order = (2, 1, 0) if color_order == "rgb" else (0, 1, 2)  # channels as B, G, R
    for c, src in enumerate(order):
        blob[0, c, :height, :width] = small[:, :, src]
    return blob


def crop_gray(
    frame: np.ndarray, center: tuple[float, float], size: tuple[float, float], angle: float, color_order: ColorOrder,
    detail: int = 96,
) -> np.ndarray:
    """A gray crop of ``size`` (w, h) pixels around ``center`` (x, y) whose x axis runs along ``angle``
    radians in the frame (y pointing down; :func:`fer_runtime.detector.eye_angle` gives the angle that
    levels the eyes). Only the crop's neighbourhood is converted to gray; outside the frame the edge
    pixels repeat. A rotated crop larger than ``detail`` pixels comes out ``detail`` pixels on its
    longer side: box-averaged by a whole factor (keeping at least ``detail`` pixels a side), then
    sampled bilinearly at that size. The classifier takes 48x48, and sampling every pixel of a large
    face would cost milliseconds (on validation scenes this framing scored within 0.2 points of
    sampling every pixel: experiments/LOG.md)."""
    cw, ch = max(1, int(round(size[0]))), max(1, int(round(size[1])))
    cos, sin = math.cos(angle), math.sin(angle)
    half_w, half_h = abs(cos) * cw / 2 + abs(sin) * ch / 2, abs(sin) * cw / 2 + abs(cos) * ch / 2
    H, W = frame.shape[:2]
    x0, y0 = max(0, int(math.floor(center[0] - half_w)) - 1), max(0, int(math.floor(center[1] - half_h)) - 1)
    x1, y1 = min(W, int(math.ceil(center[0] + half_w)) + 2), min(H, int(math.ceil(center[1] + half_h)) + 2)
    if x0 >= x1 or y0 >= y1:  # entirely outside: the nearest edge pixel
        x0, y0 = min(max(x0, 0), W - 1), min(max(y0, 0), H - 1)
        x1, y1 = x0 + 1, y0 + 1
    region = to_gray(frame[y0:y1, x0:x1], color_order)
    if abs(angle) < 1e-3:  # level: whole-pixel slicing, no interpolation
        xs = np.clip(np.floor(center[0] + np.arange(cw) - (cw - 1) / 2).astype(np.intp) - x0, 0, x1 - x0 - 1)
        ys = np.clip(np.floor(center[1] + np.arange(ch) - (ch - 1) / 2).astype(np.intp) - y0, 0, y1 - y0 - 1)
        return region[np.ix_(ys, xs)]
    k = max(1, min(min(cw, ch) // detail, 257, *region.shape))
    small = shrink(region, k)
    step = max(1.0, max(cw, ch) / k / detail)  # then bilinear samples every `step` averaged pixels
    ow, oh = max(1, round(cw / k / step)), max(1, round(ch / k / step))
    u = (np.arange(ow, dtype=np.float32) - (ow - 1) / 2) * (k * step)
    v = (np.arange(oh, dtype=np.float32) - (oh - 1) / 2) * (k * step)
    # Output pixel (u, v) samples the frame at center + R(angle) (u, v), bilinearly; in the averaged
    # region a pixel j covers region pixels [j k, j k + k), centred at j k + (k - 1) / 2.
    sx = (center[0] - 0.5 + cos * u[None, :] - sin * v[:, None] - x0 - (k - 1) / 2) / k
    sy = (center[1] - 0.5 + sin * u[None, :] + cos * v[:, None] - y0 - (k - 1) / 2) / k
    return _bilinear(small, sx, sy)


def _bilinear(img: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """float32 image sampled at (sx, sy) (clamped to its edges) -> uint8."""
    h, w = img.shape
    sx, sy = np.clip(sx, 0, w - 1), np.clip(sy, 0, h - 1)
    x0, y0 = np.minimum(sx.astype(np.intp), w - 2 if w > 1 else 0), np.minimum(sy.astype(np.intp), h - 2 if h > 1 else 0)
    fx, fy = sx - x0, sy - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)
