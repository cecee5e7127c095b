"""Property-based fuzzing of the runtime's image entries: preprocess, predict_proba, predict, detect.

The contract for any input: either a well-formed result (right shape, finite, probabilities that
sum to one, the caller's array untouched) or the package's own :class:`FerError` with a message;
never another exception type, a hang or a wrong shape. Example counts come from the hypothesis
profile (``HYPOTHESIS_PROFILE=long`` for the long runs reported in RELIABILITY.md).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from fer_runtime import EmotionRecognizer, FerError, preprocess
from fer_runtime.preprocessing import CHANNEL_COUNTS

pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore::UserWarning:PIL")]  # damaged TIFF tags

NUMERIC = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64,
           np.float16, np.float32, np.float64]
OTHER = [np.bool_, np.complex64, np.dtype("<U3"), np.dtype("datetime64[s]")]
PIL_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV"]


def _side(max_side: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 3), st.integers(1, max_side))


# Shapes users actually pass (one image, gray or with channels; stacks), plus nonsense ones.
SHAPES = st.one_of(
    st.tuples(_side(160), _side(160)),
    st.tuples(_side(96), _side(96), st.integers(0, 6)),
    st.tuples(st.integers(0, 4), _side(64), _side(64)),
    st.tuples(st.integers(0, 3), _side(48), _side(48), st.integers(0, 5)),
    hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=3),
)


@st.composite
def arrays(draw) -> np.ndarray:
    """Arrays of any dtype, shape and value (NaN, inf, extremes), sometimes strided views."""
    dtype = np.dtype(draw(st.sampled_from(NUMERIC + OTHER)))
    shape = draw(SHAPES)
    if dtype.kind in "uif" and draw(st.booleans()):  # mostly plausible grey levels
        top = min(255, np.iinfo(dtype).max) if dtype.kind in "ui" else 255
        elements = st.integers(0, top) if dtype.kind in "ui" else st.floats(0, 255, width=min(dtype.itemsize * 8, 64))
        arr = draw(hnp.arrays(dtype, shape, elements=elements))
    else:
        arr = draw(hnp.arrays(dtype, shape))
    return draw(st.sampled_from(VIEWS))(arr)


def _reverse(a):
    return a[::-1] if a.ndim else a


def _every_other(a):
    return a[:, ::2] if a.ndim >= 2 else a


def _broadcast(a):  # zero strides, read-only
    return np.broadcast_to(a[:1], (3, *a.shape[1:])) if a.ndim >= 1 and a.shape[0] else a


VIEWS = [lambda a: a, _reverse, _every_other, lambda a: a.T, np.asfortranarray, _broadcast]


@st.composite
def pil_images(draw) -> Image.Image:
    mode = draw(st.sampled_from(PIL_MODES))
    size = (draw(st.integers(0, 90)), draw(st.integers(0, 90)))
    image = Image.new(mode, size)
    if size[0] and size[1]:
        noise = draw(st.binary(min_size=16, max_size=16))
        image = Image.frombytes(mode, size, (noise * (len(image.tobytes()) // 16 + 1))[: len(image.tobytes())])
    return image


@st.composite
def encoded(draw) -> bytes:
    """Image file bytes: a real PNG/JPEG, then sometimes cut short or with bytes overwritten."""
    image = draw(pil_images()).convert("RGB") if draw(st.booleans()) else Image.new("L", (draw(st.integers(1, 80)), 40))
    buf = io.BytesIO()
    if image.size[0] and image.size[1]:
        image.save(buf, format=draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF"])))
    data = bytearray(buf.getvalue())
    if data and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data) if draw(st.booleans()) else draw(st.binary(max_size=64))


PHOTOS = sorted((Path(__file__).parent / "data" / "photos").glob("*.jpg"))
_FILES = Path(tempfile.mkdtemp(prefix="fer-fuzz-"))


@st.composite
def photos(draw) -> np.ndarray:
    """A real photo with faces, cropped, recast and viewed in random ways (detections to check)."""
    image = np.asarray(Image.open(draw(st.sampled_from(PHOTOS))).convert(draw(st.sampled_from(["RGB", "L", "RGBA"]))))
    h, w = image.shape[:2]
    if draw(st.booleans()):  # cropped anywhere (faces cut), or only trimmed at the edges
        top, left = draw(st.integers(0, h // 2)), draw(st.integers(0, w // 2))
        image = image[top: top + draw(st.integers(1, h)), left: left + draw(st.integers(1, w))]
    else:
        image = image[draw(st.integers(0, 8)): h - draw(st.integers(0, 8)), draw(st.integers(0, 8)): w - draw(st.integers(0, 8))]
    image = image.astype(draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64])))
    return draw(st.sampled_from(VIEWS))(image)


@st.composite
def paths(draw) -> str:
    """An image file on disk: possibly damaged, under any suffix, or a path that is not there."""
    path = _FILES / f"{draw(st.integers(0, 10**9))}{draw(st.sampled_from(['.png', '.jpg', '.bmp', '', '.txt']))}"
    if draw(st.integers(0, 9)):
        path.write_bytes(draw(encoded()))
    return str(path)


GOOD = st.one_of(arrays(), photos(), pil_images(), encoded(), paths())
JUNK = st.one_of(st.text(max_size=12), st.none(), st.integers(), st.floats(), st.lists(st.integers(), max_size=3))
INPUTS = st.one_of(GOOD, st.lists(GOOD, max_size=4), st.tuples(GOOD, GOOD), st.lists(st.one_of(GOOD, JUNK), max_size=4),
                   JUNK, st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def expected_count(images) -> int:
    """How many faces ``preprocess`` should return for an input it accepts (its documented rule)."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or (images.ndim == 3 and images.shape[2] in CHANNEL_COUNTS):
            return 1
        return images.shape[0]
    return len(images)


def _snapshot(images):
    return [np.array(a, copy=True) for a in (images if isinstance(images, (list, tuple)) else [images])
            if isinstance(a, np.ndarray)]


def _unchanged(images, before) -> bool:
    after = [a for a in (images if isinstance(images, (list, tuple)) else [images]) if isinstance(a, np.ndarray)]
    return all(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc") for a, b in zip(after, before))


def _refused(exc: FerError) -> None:
    assert str(exc).strip(), "an error without a message"
    event(f"refused ({type(exc).__name__})")


@pytest.fixture(scope="module")
def rec() -> EmotionRecognizer:
    return EmotionRecognizer(threads=1)


@given(images=st.one_of(arrays(), st.lists(arrays(), max_size=4)))
def test_preprocess_returns_the_documented_shape_or_raises_an_input_error(images):
    before = _snapshot(images)
    try:
        out = preprocess(images)
    except FerError as exc:
        _refused(exc)
        return
    assert out.dtype == np.float32 and out.shape == (expected_count(images), 1, 48, 48)
    assert np.isfinite(out).all()
    event("accepted")
    assert _unchanged(images, before)


@given(image=arrays())
def test_preprocess_of_a_view_equals_preprocess_of_its_copy(image):
    try:
        expected = preprocess(np.ascontiguousarray(image))
    except FerError:
        return
    np.testing.assert_array_equal(preprocess(image), expected)


@given(images=INPUTS)
def test_predict_proba_and_predict_agree_or_raise_an_input_error(rec, images):
    before = _snapshot(images)
    try:
        proba = rec.predict_proba(images)
    except FerError as exc:
        _refused(exc)
        with pytest.raises(FerError):
            rec.predict(images)
        return
    assert proba.dtype == np.float32 and proba.ndim == 2 and proba.shape[1] == 7 and proba.shape[0] >= 1
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    event("accepted")
    predictions = rec.predict(images)
    assert [p.index for p in predictions] == proba.argmax(axis=1).tolist()
    assert _unchanged(images, before)


@given(frame=st.one_of(photos(), photos(), GOOD, JUNK, st.lists(arrays(), max_size=2)))
def test_detect_returns_faces_inside_the_frame_or_raises_an_input_error(rec, frame):
    try:
        faces = rec.detect(frame)
    except FerError as exc:
        _refused(exc)
        return
    event(f"accepted ({min(len(faces), 2)}{'+' if len(faces) > 1 else ''} faces)")
    for face in faces:
        x, y, w, h = face.box
        assert w > 0 and h > 0 and np.isfinite([x, y, w, h]).all()
        assert 0 <= face.detector_score <= 1
        assert np.isclose(sum(face.prediction.probabilities.values()), 1, atol=1e-5)
