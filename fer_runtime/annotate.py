"""Drawing results on images: boxes, labels, confidences and track ids (needs Pillow: the ``image`` extra).

:func:`annotate` is the one implementation: ``fer-predict --annotate`` uses it for photos and for
every frame of an annotated video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fer_runtime.errors import InputError, MissingExtraError
from fer_runtime.preprocessing import ColorOrder, as_uint8, check_color_order
from fer_runtime.results import Face, TrackedFace

BOX_COLOR = (0, 255, 0)  # RGB
TEXT_COLOR = (0, 0, 0)


def label_text(face: Face) -> str:
    """What is written above a face: its track id (videos), label and that label's probability."""
    shown = face.reported
    track = f"#{face.track} " if isinstance(face, TrackedFace) else ""
    return f"{track}{shown.label} {shown.confidence:.2f}"


def annotate(image: np.ndarray, faces: Sequence[Face], *, color_order: ColorOrder = "rgb",
             color: tuple[int, int, int] = BOX_COLOR) -> np.ndarray:
    """A copy of ``image`` with each face's box outlined and :func:`label_text` on a filled tag above it.

    ``image``: uint8 (H, W) grey or (H, W, C) with C in 1-4 (alpha is dropped), in ``color_order``;
    other dtypes follow the preprocessing rules. Returns uint8 (H, W, 3) in the same ``color_order``
    (grey images come back as three equal channels, so that the colour shows). ``image`` itself is
    never changed. ``color``: the boxes' and tags' colour, as RGB.
    """
    pil_image, pil_draw = _pillow()
    order = check_color_order(color_order)
    rgb = _as_rgb(image, order)
    im = pil_image.fromarray(rgb)
    draw = pil_draw.Draw(im)
    line = max(2, round(max(im.size) / 300))
    font = _font(max(11, round(max(im.size) / 40)))
    for face in faces:
        x, y, w, h = face.box
        draw.rectangle([x, y, max(x, x + w - 1), max(y, y + h - 1)], outline=color, width=line)
        text = label_text(face)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y - th if y >= th else y
        draw.rectangle([x, ty, x + tw, ty + th], fill=color)
        draw.text((x + 2 - left, ty + 2 - top), text, fill=TEXT_COLOR, font=font)
    out = np.asarray(im)
    return np.ascontiguousarray(out[:, :, ::-1]) if order == "bgr" else out.copy()


def _as_rgb(image: np.ndarray, color_order: ColorOrder) -> np.ndarray:
    arr = as_uint8(np.asarray(image))
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"annotate takes an image (H, W) or (H, W, C) with C in 1-4, got shape {arr.shape}")
    rgb = arr[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if color_order == "bgr" else rgb)


def _pillow() -> tuple[Any, Any]:
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:
        raise MissingExtraError("annotate needs Pillow: pip install 'fer-edge[image]'") from exc
    return Image, ImageDraw


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()
