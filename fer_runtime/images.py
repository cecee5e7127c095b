"""Images as users pass them: file paths, PIL images, NumPy arrays, or lists mixing them.

:func:`load_image` turns one source into a uint8 array; :func:`as_images` normalises
whatever is given to ``predict`` into what :func:`fer_runtime.preprocessing.faces_to_uint8`
accepts. Only NumPy is needed for arrays; files and PIL images need Pillow
(``pip install 'fer-edge[image]'``), imported on first use.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Union

import numpy as np

from fer_runtime.errors import ConfigError, InputError, MissingExtraError
from fer_runtime.preprocessing import CHANNEL_COUNTS, ColorOrder, as_uint8, check_color_order, uint16_to_uint8

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
"""File suffixes searched for in folders (any file given by name is tried, whatever its suffix)."""

DEFAULT_MAX_PIXELS: int = 64_000_000
"""Largest image (width x height) loaded by default: the decompression-bomb limit.

A small, highly compressed file can declare a huge size and take gigabytes to decode;
files are checked against this before their pixels are decoded. Pass ``max_pixels=None``
to disable the check, or a larger number to raise it."""

ImageSource = Union[str, "os.PathLike[str]", bytes, np.ndarray, "PILImage"]
"""One image: a path to an image file, an encoded image file's bytes, a ``PIL.Image.Image`` or a NumPy array."""

FrameSource = ImageSource
"""One whole frame (a photo, a video frame) in which faces are searched: any :data:`ImageSource`."""

ImageBatch = Union[ImageSource, Sequence[ImageSource]]
"""Face crops for ``predict``: one :data:`ImageSource`, a list or tuple of them, or an (N, H, W[, C]) array stack."""

_ACCEPTED = (
    "expected a path (str or os.PathLike), encoded image bytes, a PIL.Image.Image, a NumPy array, "
    "a list or tuple of those, or an (N, H, W[, C]) array stack"
)

_TO_GRAY = ("LA", "1")  # gray (+ alpha) modes: kept gray, alpha dropped
_AS_IS = ("L", "RGB")
_PALETTE = ("P", "PA")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow opens 16-bit grey PNGs as I;16 or I
_ORIENTATION = 0x0112  # EXIF tag


def _pillow() -> tuple[ModuleType, ModuleType]:
    """(PIL.Image, PIL.ImageOps), or MissingExtraError saying how to install Pillow."""
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise MissingExtraError(
            "reading image files or PIL images needs Pillow: pip install 'fer-edge[image]'"
        ) from exc
    return Image, ImageOps


def _is_pil_image(obj: object) -> bool:
    # A PIL image can only exist once PIL.Image is imported, so arrays never import Pillow.
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def check_max_pixels(max_pixels: int | None) -> None:
    """ConfigError unless ``max_pixels`` is a positive int or None."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise ConfigError(f"max_pixels must be a positive int or None, got {max_pixels!r}")


def _check_size(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """InputError when width x height exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"{what}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
            "(a guard against decompression bombs); pass a larger max_pixels to raise it, "
            "or max_pixels=None to disable the check"
        )


def _is_single_array(arr: np.ndarray) -> bool:
    return arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in CHANNEL_COUNTS)


def _check_array(image: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if _is_single_array(image):
        _check_size(image.shape[1], image.shape[0], max_pixels, "image array")
        return image
    raise InputError(f"expected an image array of shape (H, W) or (H, W, C) with C in 1-4, got {image.shape}")


def _sixteen_bit(im: PILImage, what: str) -> np.ndarray:
    """A 16-bit grey PIL image -> uint8. Mode "I" holds 32-bit integers: values outside 0-65535
    (a 32-bit TIFF, say) have no 16-bit scale to follow, so they are refused, not clipped."""
    arr = np.asarray(im)
    if im.mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InputError(f"{what}: 32-bit integer pixels range from {arr.min()} to {arr.max()}, outside the "
                         "16-bit range 0-65535; convert it to 8 or 16 bit first")
    return uint16_to_uint8(arr)


def _pil_to_array(im: PILImage, color_order: ColorOrder, what: str) -> np.ndarray:
    """A PIL image in any mode -> uint8 (H, W) or (H, W, 3) in ``color_order``."""
    if im.mode in _SIXTEEN_BIT:
        return _sixteen_bit(im, what)
    if im.mode == "F":
        try:
            return as_uint8(np.asarray(im))  # 32-bit float pixels follow the array rules
        except InputError as exc:
            raise InputError(f"{what}: {exc}") from exc
    if im.mode in _PALETTE:
        im = im.convert("RGBA")  # what Pillow asks for palettes with transparency; alpha dropped next
    if im.mode not in _AS_IS:
        im = im.convert("L" if im.mode in _TO_GRAY else "RGB")
    arr = np.asarray(im)
    if arr.ndim == 3 and color_order == "bgr":
        return np.ascontiguousarray(arr[:, :, ::-1])
    return arr


def _upright(im: PILImage, image_ops: ModuleType) -> PILImage:
    """Apply the EXIF orientation, so a phone photo comes out the way it is displayed."""
    if im.getexif().get(_ORIENTATION, 1) in (None, 1):
        return im  # no rotation: skip exif_transpose, which would copy the image
    return image_ops.exif_transpose(im)


def _from_pil(im: PILImage, color_order: ColorOrder, max_pixels: int | None, what: str) -> np.ndarray:
    """Pixels of a PIL image (decoded here when lazy). Pillow reports truncated or broken data as
    OSError, ValueError, SyntaxError or EOFError from its format plugins, and modes it cannot
    convert as ValueError: each becomes an InputError naming the image."""
    _, image_ops = _pillow()
    _check_size(im.width, im.height, max_pixels, what)  # before load(): the size comes from the header
    try:
        return _pil_to_array(_upright(im, image_ops), color_order, what)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{what}: not a readable image ({type(exc).__name__}: {exc})") from exc


def _open(path: str | io.BytesIO, what: str) -> PILImage:
    """Image.open (lazy: header only), Pillow's own bomb check turned into InputError.

    Pillow also warns (DecompressionBombWarning) between its limit and twice it. No warnings
    filter is set here (that state is process-wide, not thread-safe): with any max_pixels at
    or below Pillow's limit, :func:`_check_size` refuses such an image right after anyway.
    """
    image, _ = _pillow()
    try:
        return image.open(path)
    except image.DecompressionBombError as exc:
        raise InputError(
            f"{what}: Pillow refuses to decode it as a possible decompression bomb ({exc}); "
            "if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS (None disables Pillow's check) "
            "and pass max_pixels=None"
        ) from exc


def _from_file(path: str | io.BytesIO, color_order: ColorOrder, max_pixels: int | None, what: str) -> np.ndarray:
    # Pillow reports unreadable files as OSError (UnidentifiedImageError is one); broken pixel
    # data is caught by _from_pil.
    try:
        with _open(path, what) as im:
            return _from_pil(im, color_order, max_pixels, what)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{what}: no such file") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = "not a format Pillow recognises" if type(exc).__name__ == "UnidentifiedImageError" else exc
        raise InputError(f"{what}: not a readable image ({type(exc).__name__}: {reason})") from exc


def load_image(
    source: ImageSource, *, color_order: ColorOrder = "rgb", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """One image file (a path, or its bytes), PIL image or array -> a NumPy image for ``predict``.

    Files and PIL images come back as uint8 ``(H, W)`` (grey sources) or ``(H, W, 3)``
    in ``color_order`` ("rgb", or "bgr" as OpenCV uses), turned upright by their EXIF
    orientation. Every Pillow mode is handled: 16-bit grey is scaled to 8 bit, palette,
    CMYK, YCbCr and the like become RGB, alpha is dropped. Arrays are returned as they
    are (not copied; their values are checked by preprocessing) once their shape is checked.

    Images over ``max_pixels`` (width x height) are refused before decoding; pass
    ``max_pixels=None`` to allow any size. Raises :class:`~fer_runtime.errors.InputError`
    for a missing or unreadable file and :class:`~fer_runtime.errors.MissingExtraError`
    when a file or PIL image is given without Pillow installed.
    """
    check_max_pixels(max_pixels)
    check_color_order(color_order)
    if isinstance(source, np.ndarray):
        return _check_array(source, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return _from_file(path, color_order, max_pixels, path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_file(io.BytesIO(bytes(source)), color_order, max_pixels, "image bytes")
    if _is_pil_image(source):
        return _from_pil(source, color_order, max_pixels, "PIL image")
    raise InputError(f"cannot read an image from a {type(source).__name__}; {_ACCEPTED}")


def _check_stack(stack: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if stack.ndim in (3, 4):
        _check_size(stack.shape[2], stack.shape[1], max_pixels, "each image of the stack")
    return stack  # any other shape: faces_to_uint8 says what it expects


def _item(item: object, index: int, color_order: ColorOrder, max_pixels: int | None) -> np.ndarray:
    if isinstance(item, (np.ndarray, str, os.PathLike, bytes, bytearray, memoryview)) or _is_pil_image(item):
        return load_image(item, color_order=color_order, max_pixels=max_pixels)
    raise InputError(f"item {index} of the list is a {type(item).__name__}; {_ACCEPTED}")


def as_images(
    images: ImageBatch,
    *,
    color_order: ColorOrder = "rgb",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray | list[np.ndarray]:
    """Whatever is passed to ``predict`` -> an array or a list of arrays for preprocessing.

    Accepts one path, PIL image or array; a list or tuple mixing them; or an
    ``(N, H, W[, C])`` array stack, which passes through untouched. A ``str`` is always
    a path, never a sequence of characters. Files and PIL images are read with
    :func:`load_image` (same ``color_order`` and ``max_pixels``); arrays are checked
    against ``max_pixels`` per image. Anything else raises
    :class:`~fer_runtime.errors.InputError` saying what is accepted.
    """
    check_max_pixels(max_pixels)
    if isinstance(images, np.ndarray):
        return _check_array(images, max_pixels) if _is_single_array(images) else _check_stack(images, max_pixels)
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or _is_pil_image(images):
        return [load_image(images, color_order=color_order, max_pixels=max_pixels)]
    if isinstance(images, (list, tuple)):
        return [_item(item, i, color_order, max_pixels) for i, item in enumerate(images)]
    raise InputError(f"cannot read images from a {type(images).__name__}; {_ACCEPTED}")
