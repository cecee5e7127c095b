"""Pure-NumPy preprocessing: face image(s) -> float32 (N, 1, 48, 48).

This is the one preprocessing function of the project. Training, export checks,
benchmarks and the runtime all call :func:`preprocess`, so train and serve cannot
disagree. Every step is written to match OpenCV, which the tests use as the oracle:

* colour -> gray with ``cv2.cvtColor``'s fixed-point BT.601 weights (bit-exact),
* resize to 48x48 with area averaging when shrinking and bilinear (half-pixel
  centres) when enlarging, in exact arithmetic (within one grey level of ``cv2.resize``),
* histogram equalization bit-exact with ``cv2.equalizeHist``,
* scaling ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from fer_runtime.errors import ConfigError, InputError

ColorOrder = Literal["rgb", "bgr"]
CHANNEL_COUNTS = (1, 2, 3, 4)  # gray, gray + alpha, colour, colour + alpha

# cv2.cvtColor(COLOR_RGB2GRAY) on uint8 (OpenCV 4.x): (R*9798 + G*19235 + B*3735 + 2**14) >> 15,
# i.e. BT.601 0.299/0.587/0.114 in 15-bit fixed point. Checked bit for bit in the tests.
GRAY_SHIFT = 15
GRAY_WEIGHTS_RGB = np.array([9798, 19235, 3735], dtype=np.int64)


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw faces become model input; travels with checkpoints and ONNX metadata."""

    size: int = 48
    equalize: bool = True
    mean: float = 0.0
    std: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        known = {k: data[k] for k in ("size", "equalize", "mean", "std") if k in data}
        return cls(**known)


def check_color_order(color_order: object) -> ColorOrder:
    """``color_order`` if it is "rgb" or "bgr", else :class:`~fer_runtime.errors.ConfigError`."""
    if color_order not in ("rgb", "bgr"):
        raise ConfigError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    return color_order  # type: ignore[return-value]


def to_gray(image: np.ndarray, color_order: ColorOrder = "rgb") -> np.ndarray:
    """One image (H, W), (H, W, 1), (H, W, 2; gray + alpha), (H, W, 3) or (H, W, 4; alpha dropped) -> uint8 (H, W)."""
    img = as_uint8(image)
    if img.ndim == 2:
        return img
    if img.ndim != 3 or img.shape[2] not in CHANNEL_COUNTS:
        raise InputError(f"expected an image of shape (H, W) or (H, W, C) with C in 1-4, got {image.shape}")
    if img.shape[2] <= 2:
        return img[:, :, 0]
    check_color_order(color_order)
    weights = GRAY_WEIGHTS_RGB if color_order == "rgb" else GRAY_WEIGHTS_RGB[::-1]
    # Elementwise in int32 (255 * 32768 fits): several times faster than an int64 matmul.
    rgb = img[:, :, :3].astype(np.int32)  # int32 before multiplying: NumPy 1.x would keep uint16 and wrap
    acc = rgb[:, :, 0] * weights[0] + rgb[:, :, 1] * weights[1] + rgb[:, :, 2] * weights[2]
    return ((acc + np.int32(1 << (GRAY_SHIFT - 1))) >> GRAY_SHIFT).astype(np.uint8)


@lru_cache(maxsize=256)
def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, int]:
    """``(weights, denominator)`` resampling one axis: weights an integer-valued float64 (n_out, n_in)
    matrix whose rows sum to ``denominator`` (cached: crops repeat sizes).

    Area averaging when shrinking (the identity when equal): output pixel i covers input
    [i n_in / n_out, (i + 1) n_in / n_out), so in units of 1 / n_out every overlap is a whole number
    and the denominator is n_in. Bilinear with half-pixel centres, edges clamped (cv2.INTER_LINEAR)
    when enlarging: the sample point ((2 i + 1) n_in - n_out) / (2 n_out) has its fraction in units
    of 1 / (2 n_out). Whole-number weights keep every product and partial sum of the resize exact in
    float64, so the result does not depend on the order a matrix product sums in (BLAS, ONNX Runtime).
    """
    w = np.zeros((n_out, n_in))
    if n_in >= n_out:
        for i in range(n_out):
            lo, hi = i * n_in, (i + 1) * n_in
            for j in range(lo // n_out, min(-(-hi // n_out), n_in)):
                w[i, j] = min(hi, (j + 1) * n_out) - max(lo, j * n_out)
        denominator = n_in
    else:
        denominator = 2 * n_out
        for i in range(n_out):
            j0, frac = divmod((2 * i + 1) * n_in - n_out, denominator)
            w[i, min(max(j0, 0), n_in - 1)] += denominator - frac
            w[i, min(max(j0 + 1, 0), n_in - 1)] += frac
    w.flags.writeable = False
    return w, denominator


def _round_ratio(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """Non-negative integers / a positive integer, rounded half to even, in exact integer arithmetic."""
    q, r = np.divmod(numerator, denominator)
    return q + ((2 * r > denominator) | ((2 * r == denominator) & (q % 2 == 1)))


def resize(gray: np.ndarray, size: int = 48) -> np.ndarray:
    """uint8 (H, W) or (N, H, W) -> uint8 (..., size, size); area when shrinking, bilinear when enlarging,
    exact: the weighted sums are computed without rounding, then rounded half to even once."""
    h, w = gray.shape[-2:]
    if (h, w) == (size, size):
        return gray
    if h == 0 or w == 0:
        raise InputError(f"cannot resize an empty image of shape {gray.shape}")
    (wy, dy), (wx, dx) = axis_weights(h, size), axis_weights(w, size)
    sums = (wy @ gray.astype(np.float64) @ wx.T).astype(np.int64)  # whole numbers below 2**53: exact
    return np.clip(_round_ratio(sums, dy * dx), 0, 255).astype(np.uint8)


def _equalize_luts(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image equalization lookup tables for uint8 (N, P) pixels.

    Returns ``(lut, index)``: ``lut`` is uint8 (N, 256) and ``index`` (N, P) addresses
    ``lut.ravel()``, so one gather maps every pixel of every image at once.
    """
    n, total = flat.shape
    # Image i's table occupies entries [256 i, 256 i + 256) of the raveled tables. One image
    # needs no offset, so its uint8 pixels index directly (no int64 copy: the batch-1 latency).
    index = flat if n == 1 else flat + (np.arange(n, dtype=np.int64) * 256)[:, None]
    hist = np.bincount(index.ravel(), minlength=256 * n).reshape(n, 256)
    cum = np.cumsum(hist, axis=1)
    first = np.argmax(hist > 0, axis=1)  # lowest grey level present
    first_count = hist[np.arange(n), first]
    # OpenCV: scale = 255.f / (total - hist[first]) in float32; lut[j] = cvRound(float(sum_j) * scale)
    # for j > first, where sum_j counts the pixels above `first` up to j; lut[first] = 0. Levels
    # below `first` never occur, so their entries do not matter.
    scale = np.float32(255.0) / np.maximum(total - first_count, 1).astype(np.float32)
    above = (cum - first_count[:, None]).astype(np.float32)
    lut = np.rint(above * scale[:, None]).clip(0, 255).astype(np.uint8)
    flat_img = first_count == total  # one grey level only: OpenCV leaves the image unchanged
    if flat_img.any():
        lut[flat_img] = np.arange(256, dtype=np.uint8)
    return lut, index


def equalize_hist(images: np.ndarray) -> np.ndarray:
    """Histogram equalization of uint8 (H, W) or (N, H, W), bit-exact with cv2.equalizeHist."""
    if images.dtype != np.uint8:
        raise InputError(f"equalize_hist needs uint8 images, got {images.dtype}")
    batch = images[None] if images.ndim == 2 else images
    lut, index = _equalize_luts(batch.reshape(batch.shape[0], -1))
    return lut.ravel()[index].reshape(images.shape)


def uint16_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit levels 0-65535 -> 8 bit: round(x / 257), so 65535 -> 255 and 257 -> 1; clipped."""
    return np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)


def as_uint8(image: np.ndarray) -> np.ndarray:
    """Any image array -> uint8 grey levels, refusing values whose scale is unclear.

    uint8 is returned as is (no copy: the common path). uint16 is scaled from 0-65535.
    Other integer and float dtypes must hold 0-255 grey levels; a float image whose
    maximum is at most 1.0 looks like a 0-1 image and is refused rather than guessed at.
    """
    arr = np.asarray(image)
    if arr.size == 0:
        raise InputError(f"empty image of shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "uif":  # bool ("b"), strings, objects, complex...
        raise InputError(f"images must be uint8, uint16 or 0-255 integer/float grey levels, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # the dtype says 0-65535
        return uint16_to_uint8(arr)
    lo, hi = arr.min(), arr.max()  # NaN propagates into both, inf into one of them
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError("image contains NaN or infinite values")
    if lo < 0 or hi > 255:
        raise InputError(
            f"image values range from {lo:g} to {hi:g}, outside 0-255: expected 0-255 grey levels "
            "(any integer or float dtype), uint8, or uint16 (0-65535, scaled to 8 bit)"
        )
    if arr.dtype.kind == "f" and 0 < hi <= 1.0:  # all zeros is black on either scale
        raise InputError(
            f"float image with maximum {hi:g}: it looks like a 0-1 image; multiply it by 255 "
            "to pass 0-255 grey levels"
        )
    return (np.rint(arr) if arr.dtype.kind == "f" else arr).astype(np.uint8)


def faces_to_uint8(
    images: np.ndarray | Sequence[np.ndarray], size: int = 48, color_order: ColorOrder = "rgb"
) -> np.ndarray:
    """Any face image(s) -> uint8 (N, size, size) gray, before equalization.

    Accepts one image, a list of images of any sizes and channel layouts (see :func:`to_gray`),
    or an (N, H, W) stack of gray faces. A 3-D array whose last axis is 1-4 is one image.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 3 and images.shape[2] not in CHANNEL_COUNTS:
            return resize(as_uint8(images), size)
        if images.ndim == 2:
            return resize(to_gray(images, color_order), size)[None]
        if images.ndim != 3 and images.ndim != 4:
            raise InputError(
                f"expected an image (H, W[, C]), a list of images or a stack (N, H, W[, C]); got shape {images.shape}"
            )
        if images.ndim == 3:
            images = [images]
    items = list(images)
    if not items:
        raise InputError("no images given")
    return np.stack([resize(to_gray(im, color_order), size) for im in items])


@lru_cache(maxsize=16)
def scaled_levels(mean: float, std: float) -> np.ndarray:
    """Grey level -> model input value; scaling folded into a lookup table so one gather does it."""
    levels = np.arange(256, dtype=np.float32) * np.float32(1.0 / (255.0 * std)) - np.float32(mean / std)
    levels.flags.writeable = False
    return levels


def preprocess(
    images: np.ndarray | Sequence[np.ndarray],
    config: PreprocessConfig | None = None,
    color_order: ColorOrder = "rgb",
) -> np.ndarray:
    """Face image(s) -> float32 (N, 1, size, size) model input, as ``config`` says."""
    cfg = config or PreprocessConfig()
    faces = faces_to_uint8(images, cfg.size, color_order)
    n = faces.shape[0]
    if n == 1:
        return preprocess_face(faces[0], cfg)
    flat = faces.reshape(n, -1)
    levels = scaled_levels(cfg.mean, cfg.std)
    if cfg.equalize:
        lut, index = _equalize_luts(flat)
        out = levels[lut].ravel()[index]
    else:
        out = levels[flat]
    return out.reshape(n, 1, cfg.size, cfg.size)


def preprocess_face(face: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One grey uint8 face already ``config.size`` square -> float32 (1, 1, size, size): the batch-1
    path, with no conversion, resize or copy before the lookups (the caller has checked the array)."""
    pixels = face.reshape(-1)
    levels = scaled_levels(config.mean, config.std)
    out = _equalized_levels_one(pixels, levels) if config.equalize else levels.take(pixels)
    return out.reshape(1, 1, config.size, config.size)


def _equalized_levels_one(pixels: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """One face's uint8 pixels (P,) -> equalized and scaled float32 (P,): the same arithmetic as
    :func:`_equalize_luts` (so the same bits) in half the NumPy calls, for batch-1 latency."""
    hist = np.bincount(pixels, minlength=256)
    first = int((hist != 0).argmax())
    first_count, total = int(hist[first]), pixels.size
    if first_count == total:  # one grey level only: OpenCV leaves the image unchanged
        return levels.take(pixels)
    scale = np.float32(255.0) / np.float32(total - first_count)
    above = (hist.cumsum() - first_count).astype(np.float32)
    lut = np.rint(above * scale).clip(0, 255).astype(np.uint8)
    return levels.take(lut).take(pixels)
