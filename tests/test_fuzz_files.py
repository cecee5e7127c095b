"""Property-based fuzzing of what the package reads from files: model metadata, FER2013, video.

Each reader either works or raises its package's own typed error with a message (ModelError /
VideoError from fer_runtime, DataError from fer_train); never another exception type or a hang.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from fer_bench.clips import Mover, moving_faces, write_clip
from fer_runtime import EmotionRecognizer, FerError, ModelError
from fer_runtime.recognizer import METADATA_KEY
from fer_runtime.video import open_video
from fer_train.data import DataError, load_fer2013

pytestmark = pytest.mark.fuzz
_FILES = Path(tempfile.mkdtemp(prefix="fer-fuzz-files-"))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HOSTILE_TEXT = st.sampled_from([
    "[" * 100_000 + "]" * 100_000,  # nesting deeper than any recursion limit
    '{"labels": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"temperature": 1e999}', '{"temperature": -0.0}', '{"temperature": NaN}', '{"temperature": "2"}',
    '{"temperature": ' + "9" * 5000 + "}",  # more digits than int() converts by default
    '{"preprocess": {"size": 100000000}}', '{"preprocess": {"size": -48}}', '{"preprocess": {"std": 0}}',
    '{"preprocess": {"mean": 1e308, "std": 1e-308}}', '{"preprocess": {"equalize": "no"}}',
    '{"labels": "AngryDisgustFearHappySadSurpriseNeutral"}', '{"labels": [1, 2, 3, 4, 5, 6, 7]}',
    '{"labels": [null, null, null, null, null, null, null]}', '{"labels": {"0": "Angry"}}',
    "", "null", "[]", '"text"', "{", '{"a": 1, "a": 2}', "\x00" * 10,
])


def tiny_model(metadata: str | None) -> bytes:
    """A valid ONNX model with the recognizer's IO (N x 1 x 48 x 48 -> N x 7) and the given metadata."""
    weight = numpy_helper.from_array(np.linspace(-1, 1, 48 * 48 * 7, dtype=np.float32).reshape(-1, 7), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {METADATA_KEY: metadata})
    return model.SerializeToString()


REAL_METADATA = EmotionRecognizer(threads=1, precision="fp32").info.metadata.to_dict()  # the bundled default's


@st.composite
def mutated_metadata(draw) -> str:
    """The bundled model's metadata with a key removed or a value (at any depth) replaced."""
    meta = json.loads(json.dumps(REAL_METADATA))
    node, key = meta, None
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(node, dict) or not node:
            break
        key = draw(st.sampled_from(sorted(node)))
        if draw(st.booleans()) or not isinstance(node[key], dict):
            break
        node = node[key]
    if key is not None and isinstance(node, dict):
        if draw(st.booleans()):
            node.pop(key, None)
        else:
            node[key] = draw(JSON)
    return json.dumps(meta)


METADATA = st.one_of(mutated_metadata(), mutated_metadata(), JSON.map(json.dumps), HOSTILE_TEXT, st.text(max_size=40))


@given(metadata=METADATA)
def test_model_metadata_is_used_or_refused_with_a_model_error(metadata):
    path = _FILES / "tiny.onnx"
    path.write_bytes(tiny_model(metadata))
    try:
        rec = EmotionRecognizer(path, threads=1)
    except ModelError as exc:
        assert str(exc).strip()
        event("refused (ModelError)")
        return
    proba = rec.predict_proba(np.zeros((48, 48), np.uint8))
    assert proba.shape == (1, len(rec.labels)) and np.isfinite(proba).all()
    assert all(isinstance(label, str) for label in rec.labels)
    event("accepted")


# FER2013 CSVs: a few good rows, then rows with random fields, sometimes gzipped and cut short.
def _pixels(n: int, rng: np.random.Generator) -> str:
    return " ".join(map(str, rng.integers(0, 256, n)))


SPOIL = st.integers(0, 11).map(lambda n: n == 0)
FIELD = st.one_of(st.text(max_size=6), st.integers(-3, 300).map(str), st.sampled_from(["", " 3", "3 ", "²", "٣", "1e0"]))


BAD_PIXELS = st.one_of(FIELD, st.integers(0, 2400).map(lambda n: " ".join(["7"] * n)),
                       st.sampled_from(["1 " * 2303 + "256", "1 " * 2303 + "-1", "1 " * 2304 + "x", "1 " * 2305,
                                        "1  " * 2304, "\t".join(["1"] * 2304), "1e0 " * 2304]))


@st.composite
def fer_csv(draw) -> bytes:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    header = "emotion,pixels,Usage" if not draw(SPOIL) else draw(st.sampled_from(["emotion,pixels", "emotion, pixels ,Usage", "pixels,emotion",
                                   "emotion,pixels,Usage,extra", "", "\ufeffemotion,pixels,Usage"]))
    lines = [header]
    for _ in range(draw(st.integers(0, 6))):  # each field good unless a 1-in-12 draw spoils it
        emotion = draw(FIELD) if draw(SPOIL) else str(draw(st.integers(0, 6)))
        pixel_text = draw(BAD_PIXELS) if draw(SPOIL) else _pixels(2304, rng)
        usage = draw(FIELD) if draw(SPOIL) else draw(st.sampled_from(["Training", "PublicTest", "PrivateTest"]))
        sep = draw(st.sampled_from([",", ";"])) if draw(SPOIL) else ","
        lines.append(sep.join([emotion, f'"{pixel_text}"' if draw(st.booleans()) else pixel_text, usage]))
    data = ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))).encode("utf-8", "surrogatepass")
    gzipped = draw(st.booleans())
    if gzipped:
        data = gzip.compress(data)
    if draw(SPOIL):
        data = data[: draw(st.integers(0, len(data)))]
    return data, ".csv.gz" if gzipped != draw(SPOIL) else ".csv"


@given(file=fer_csv())
@example(file=(("emotion,pixels\n\u00b2," + " ".join(["1"] * 2304) + "\n").encode(), ".csv"))  # "²".isdigit()
def test_fer2013_csv_loads_or_raises_a_data_error(file):
    data, suffix = file
    path = _FILES / f"fer{suffix}"
    path.write_bytes(data)
    try:
        loaded = load_fer2013(path, cache=False)
    except DataError as exc:
        assert str(exc).strip()
        event("refused (DataError)")
        return
    assert loaded.images.dtype == np.uint8 and loaded.images.shape == (len(loaded), 48, 48)
    assert loaded.labels.min() >= 0 and loaded.labels.max() <= 6
    event("accepted")


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    movers = [Mover(start=(60, 50), velocity=(20, 0), width=50)]
    write_clip(path, (frame for frame, _ in moving_faces((96, 128), movers, 10.0, 10)), 10.0)
    return path.read_bytes()


@given(seed=st.integers(0, 2**32 - 1), how=st.sampled_from(["random", "cut", "flipped", "header"]),
       suffix=st.sampled_from([".mp4", ".avi", ".mkv", ".webm", ".mov"]))
def test_video_reader_reads_or_raises_a_video_error(clip_bytes, seed, how, suffix):
    rng = np.random.default_rng(seed)
    data = bytearray(clip_bytes)
    if how == "random":
        data = bytearray(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes())
    elif how == "cut":
        data = data[: int(rng.integers(0, len(data)))]
    elif how == "flipped":
        for i in rng.integers(0, len(data), 20):
            data[i] ^= 0xFF
    else:  # the container's header survives, everything after it is noise
        data[64:] = rng.integers(0, 256, len(data) - 64, dtype=np.uint8).tobytes()
    path = _FILES / f"video{suffix}"
    path.write_bytes(bytes(data))
    frames = 0
    try:
        with open_video(path) as source:
            for frame in source:
                assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
                frames += 1
    except FerError as exc:
        assert str(exc).strip()
        event(f"refused ({type(exc).__name__}) after {min(frames, 1)}{'+' if frames else ''} frames")
        return
    event(f"read ({min(frames, 1)}{'+' if frames else ''} frames)")
