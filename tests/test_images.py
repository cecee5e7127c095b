"""Images as users pass them: files, PIL images, arrays; and the value rules of preprocessing."""

from __future__ import annotations

import builtins
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_runtime.errors import ConfigError, InputError, MissingExtraError
from fer_runtime.images import DEFAULT_MAX_PIXELS, as_images, load_image
from fer_runtime.preprocessing import faces_to_uint8, preprocess, to_gray


@pytest.fixture
def rgb(rng) -> np.ndarray:
    return rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)


@pytest.fixture
def png(tmp_path, rgb) -> Path:
    path = tmp_path / "face.png"
    Image.fromarray(rgb).save(path)
    return path


# --- files and PIL images ---------------------------------------------------------------------

def test_path_as_str_and_path(png, rgb, tmp_path):
    for source in (png, str(png)):
        out = load_image(source)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, rgb)
    gray = rgb[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"), gray)


def test_encoded_bytes(png, rgb):
    np.testing.assert_array_equal(load_image(png.read_bytes()), rgb)
    np.testing.assert_array_equal(load_image(bytearray(png.read_bytes()), color_order="bgr"), rgb[:, :, ::-1])
    with pytest.raises(InputError, match="image bytes: not a readable image"):
        load_image(b"not an image at all")
    with pytest.raises(InputError, match="image bytes: .*over the limit"):
        load_image(png.read_bytes(), max_pixels=10)


def test_pil_image_and_bgr(png, rgb):
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb)), rgb)
    bgr = load_image(png, color_order="bgr")
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    assert bgr.flags.c_contiguous
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb), color_order="bgr"), rgb[:, :, ::-1])
    with pytest.raises(ConfigError, match="color_order"):
        load_image(png, color_order="hsv")  # type: ignore[arg-type]


@pytest.mark.parametrize(("orientation", "k"), [(6, -1), (8, 1), (3, 2)])  # np.rot90 turns that undo them
def test_exif_orientation_applied_to_files_and_pil_images(tmp_path, orientation, k):
    # Large flat blocks keep JPEG artefacts identical between the two files.
    pixels = np.kron(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, np.ones((16, 16), np.uint8))
    img = Image.fromarray(np.dstack([pixels, 255 - pixels, pixels // 2]))
    plain, rotated = tmp_path / "plain.jpg", tmp_path / "rotated.jpg"
    img.save(plain, quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(rotated, quality=95, exif=exif)
    expected = np.rot90(np.asarray(Image.open(plain)), k=k)
    out = load_image(rotated)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    with Image.open(rotated) as im:
        np.testing.assert_array_equal(load_image(im), expected)


def test_16_bit_grey_png_scaled_to_8_bit(tmp_path, rng):
    levels = rng.integers(0, 256, (24, 40)).astype(np.int64)
    arr16 = np.clip(levels * 257 + rng.integers(-128, 129, levels.shape), 0, 65535).astype(np.uint16)
    image = Image.fromarray(arr16)
    assert image.mode == "I;16"
    image.save(tmp_path / "deep.png")
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "shallow.png")
    out, shallow = load_image(tmp_path / "deep.png"), load_image(tmp_path / "shallow.png")
    assert out.dtype == np.uint8 and out.shape == (24, 40)
    assert np.abs(out.astype(int) - shallow.astype(int)).max() <= 1
    np.testing.assert_array_equal(out, np.rint(arr16 / 257))
    np.testing.assert_array_equal(load_image(image.convert("I")), out)
    size = (arr16.shape[1], arr16.shape[0])  # built from bytes: Pillow's convert() to these clips at 255
    for mode, dtype in (("I;16B", ">u2"), ("I;16L", "<u2"), ("I;16N", "=u2")):
        np.testing.assert_array_equal(load_image(Image.frombytes(mode, size, arr16.astype(dtype).tobytes())), out)


@pytest.mark.parametrize(
    ("mode", "suffix"), [("P", "png"), ("LA", "png"), ("RGBA", "png"), ("CMYK", "tiff"), ("1", "png")]
)
def test_other_modes_in_files_convert(tmp_path, rgb, mode, suffix):
    source = Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).convert(mode)
    path = tmp_path / f"image.{suffix}"
    source.save(path)
    out = load_image(path)
    expected = np.asarray(source.convert("L")) if mode in ("LA", "1") else np.asarray(source.convert("RGBA"))[..., :3]
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV", "P", "PA", "RGBA", "CMYK", "1", "LA"])
def test_other_modes_of_pil_images_convert(rgb, mode):
    out = load_image(Image.fromarray(rgb).convert(mode))
    assert out.dtype == np.uint8
    assert out.shape == ((20, 30) if mode in ("LA", "1") else (20, 30, 3))


def test_32_bit_integer_pixels_outside_16_bit_refused(rng):
    wide = Image.fromarray(rng.integers(0, 70_000, (6, 8)).astype(np.int32), mode="I")
    with pytest.raises(InputError, match="PIL image: 32-bit integer pixels range from .* outside the 16-bit range"):
        load_image(wide)
    with pytest.raises(InputError, match="outside the 16-bit"):
        load_image(Image.fromarray(np.full((4, 4), -1, np.int32), mode="I"))


def test_truncated_pil_image_raises_input_error(tmp_path, rgb):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.kron(rgb, np.ones((8, 8, 1), np.uint8))).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, half the scan gone
    with Image.open(path) as im:  # lazy: the pixels are decoded inside load_image
        with pytest.raises(InputError, match="PIL image: not a readable image"):
            load_image(im)
    with pytest.raises(InputError, match="cut.jpg: not a readable image"):
        load_image(path)


def test_float_mode_follows_the_array_rules(rng):
    levels = rng.uniform(0, 255, (10, 12)).astype(np.float32)
    np.testing.assert_array_equal(load_image(Image.fromarray(levels, mode="F")), np.rint(levels))
    with pytest.raises(InputError, match="PIL image: .*0-1 image"):
        load_image(Image.fromarray(levels / 255, mode="F"))


def _png_declaring(tmp_path: Path, width: int, height: int) -> Path:
    """A valid 4x4 PNG whose IHDR (and its CRC) is patched to claim width x height."""
    small = tmp_path / "small.png"
    Image.new("L", (4, 4)).save(small)
    data = bytearray(small.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / f"declares_{width}x{height}.png"
    path.write_bytes(bytes(data))
    return path


def test_pixel_limit_refused_before_decoding(tmp_path, rgb, png):
    with pytest.raises(InputError, match=r"30x20 = 600 pixels is over the limit of 100.*max_pixels=None"):
        load_image(png, max_pixels=100)
    with pytest.raises(InputError, match="over the limit"):
        load_image(Image.fromarray(rgb), max_pixels=100)
    # 9000 x 9000 is over our 64M default but under Pillow's own limit; the file holds 16 pixels,
    # so decoding it would fail: the size error proves the check came first.
    bomb = _png_declaring(tmp_path, 9000, 9000)
    assert 9000 * 9000 > DEFAULT_MAX_PIXELS
    with pytest.raises(InputError, match=r"declares_9000x9000.png: 9000x9000 = 81,000,000 pixels"):
        load_image(bomb)
    with pytest.raises(InputError, match="not a readable image"):  # the check disabled: decoding fails
        load_image(bomb, max_pixels=None)
    huge = _png_declaring(tmp_path, 100_000, 100_000)  # over twice Pillow's limit: Pillow refuses in open()
    for limit in (DEFAULT_MAX_PIXELS, None):
        with pytest.raises(InputError, match="decompression bomb.*MAX_IMAGE_PIXELS"):
            load_image(huge, max_pixels=limit)
    with pytest.raises(ConfigError, match="max_pixels must be"):
        load_image(png, max_pixels=0)


def test_array_pixel_limit(rng):
    assert load_image(np.zeros((10, 10), np.uint8), max_pixels=100) is not None
    with pytest.raises(InputError, match="10x11 = 110 pixels"):
        load_image(np.zeros((11, 10, 3), np.uint8), max_pixels=100)
    with pytest.raises(InputError, match="each image of the stack: 10x11"):
        as_images(np.zeros((2, 11, 10), np.uint8), max_pixels=100)
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((2, 4, 4, 3), np.uint8))


def test_unreadable_files_name_the_path(tmp_path, png):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(InputError, match=r"nope\.jpg: no such file"):
        load_image(missing)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.png: not a readable image"):
        load_image(text)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[:60])
    with pytest.raises(InputError, match=r"truncated\.png: not a readable image"):
        load_image(truncated)
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path)  # a folder


# --- value rules of preprocessing (every entry point uses them) ---------------------------------

def test_uint8_passes_without_copy(rgb):
    gray = rgb[:, :, 0].copy()
    assert to_gray(gray) is gray
    arr = np.zeros((8, 8), np.uint8)
    assert load_image(arr) is arr and as_images(arr) is arr


def test_float_images_must_be_0_255(rng):
    levels = rng.uniform(0, 255, (48, 48))
    np.testing.assert_array_equal(faces_to_uint8(levels), faces_to_uint8(np.rint(levels).astype(np.uint8)))
    np.testing.assert_array_equal(to_gray(np.zeros((4, 4), np.float32)), np.zeros((4, 4), np.uint8))  # black either way
    with pytest.raises(InputError, match=r"maximum 1: it looks like a 0-1 image; multiply it by 255"):
        preprocess(levels / levels.max())
    with pytest.raises(InputError, match="0-1 image"):
        preprocess([np.full((48, 48, 3), 0.5, np.float32)])
    levels[0, :2] = -3, 255
    with pytest.raises(InputError, match=r"from -3 to 255, outside 0-255.*uint16"):
        preprocess(levels)


def test_integer_images(rng):
    levels = rng.integers(0, 256, (30, 30))
    expected = faces_to_uint8(levels.astype(np.uint8))
    for dtype in (np.int16, np.int32, np.int64, np.uint32):
        np.testing.assert_array_equal(faces_to_uint8(levels.astype(dtype)), expected)
    for bad in (np.full((8, 8), 300, np.int32), np.full((8, 8), -1, np.int8)):
        with pytest.raises(InputError, match="from 300 to 300, outside 0-255: expected|from -1 to -1"):
            to_gray(bad)
    arr16 = (levels * 257).astype(np.uint16)
    np.testing.assert_array_equal(faces_to_uint8(arr16), expected)
    np.testing.assert_array_equal(to_gray(arr16.astype(">u2")), levels)
    np.testing.assert_array_equal(to_gray(np.full((2, 2), 65535, np.uint16)), np.full((2, 2), 255))
    with pytest.raises(InputError, match="dtype bool"):
        to_gray(np.ones((4, 4), bool))
    with pytest.raises(InputError, match="dtype complex"):
        to_gray(np.ones((4, 4), complex))


# --- as_images ------------------------------------------------------------------------------

def test_as_images_str_is_a_path(png, rgb):
    out = as_images(str(png))
    assert isinstance(out, list) and len(out) == 1
    np.testing.assert_array_equal(out[0], rgb)
    np.testing.assert_array_equal(preprocess(as_images(png)), preprocess(rgb))


def test_as_images_mixed_list_and_stack(png, rgb, rng):
    gray = rng.integers(0, 256, (50, 40)).astype(np.uint8)
    for container in (list, tuple):
        out = as_images(container([png, gray, Image.fromarray(rgb), str(png)]), color_order="bgr")
        assert [a.shape for a in out] == [(20, 30, 3), (50, 40), (20, 30, 3), (20, 30, 3)]
        assert out[1] is gray
        np.testing.assert_array_equal(out[2], rgb[:, :, ::-1])
        assert faces_to_uint8(out, color_order="bgr").shape == (4, 48, 48)
    stack = rng.integers(0, 256, (5, 48, 48)).astype(np.uint8)
    assert as_images(stack) is stack
    colour_stack = rng.integers(0, 256, (2, 48, 48, 3)).astype(np.uint8)
    assert as_images(colour_stack) is colour_stack
    assert as_images([]) == []


@pytest.mark.parametrize(("bad", "name"), [({"a": 1}, "dict"), (3, "int"), (None, "NoneType"), (1.5, "float")])
def test_as_images_rejects_other_types(bad, name):
    with pytest.raises(InputError, match=f"a {name}; expected a path"):
        as_images(bad)
    with pytest.raises(InputError, match=f"item 1 of the list is a {name}"):
        as_images([np.zeros((4, 4), np.uint8), bad])
    with pytest.raises(InputError, match=f"a {name}; expected"):
        load_image(bad)


def test_missing_pillow_raises_missing_extra(monkeypatch, png):
    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(MissingExtraError, match=r"pip install 'fer-edge\[image\]'"):
        load_image(png)
    with pytest.raises(MissingExtraError, match=r"fer-edge\[image\]"):
        as_images([str(png)])
    arr = np.zeros((4, 4), np.uint8)
    assert load_image(arr) is arr  # arrays never need Pillow
