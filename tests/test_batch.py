"""BatchPredictor without an engine: columns, bad inputs as rows, pickling, video frame ranges."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_bench.clips import Mover, moving_faces, write_clip
from fer_runtime import LABELS, EmotionRecognizer
from fer_runtime.batch import (
    OPEN_END,
    TRACKS_PER_RANGE,
    BatchPredictor,
    output_columns,
    split_video,
    to_columns,
    worker_threads,
)
from fer_runtime.errors import InputError
from fer_runtime.rows import to_arrow

COLUMNS = output_columns()

PHOTOS = Path(__file__).parent / "data" / "photos"


@pytest.fixture(scope="module")
def predictor() -> BatchPredictor:
    return BatchPredictor("vgg-taper-int8", threads=1)


def _rows(columns: dict[str, np.ndarray]) -> list[dict]:
    return [{k: columns[k][i] for k in COLUMNS} for i in range(len(columns["source"]))]


def test_image_batches_by_bytes_path_and_array(predictor, tmp_path):
    face, cat = PHOTOS / "astronaut.jpg", PHOTOS / "chelsea.jpg"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = predictor({"id": np.array(["a", "b", "c"], object),
                     "bytes": np.array([face.read_bytes(), cat.read_bytes(), b"junk"], object)})
    assert list(out) == COLUMNS and out["p_Happy"].dtype == np.float64
    rows = _rows(out)
    assert [(r["source"], r["status"]) for r in rows] == [("a", "ok"), ("b", "no_face"), ("c", "error")]
    assert rows[0]["w"] > 40 and rows[0]["label"] in LABELS and math.isclose(sum(rows[0][f"p_{k}"] for k in LABELS), 1, abs_tol=1e-5)
    assert "not a readable image" in rows[2]["error"] and rows[2]["face"] is None and math.isnan(rows[2]["confidence"])
    expected = EmotionRecognizer("vgg-taper-int8").detect(face)[0]
    assert rows[0]["label"] == expected.prediction.label and (rows[0]["x"], rows[0]["w"]) == (expected.box[0], expected.box[2])
    by_path = _rows(predictor({"path": np.array([str(face), str(tmp_path / "missing.jpg"), str(tmp_path / "broken.jpg")])}))
    assert [r["status"] for r in by_path] == ["ok", "error", "error"] and by_path[0]["source"] == str(face)
    assert "no such file" in by_path[1]["error"]
    arr = np.asarray(Image.open(face).convert("RGB"))
    mixed = np.empty(2, object)  # how Ray Data hands over arrays of different shapes
    mixed[0], mixed[1] = arr, arr[:100, :80]
    assert _rows(predictor({"image": mixed}))[0]["label"] == expected.prediction.label
    assert _rows(predictor({"image": arr[None]}))[0]["label"] == expected.prediction.label  # a stack of equal shapes


def test_crops_mode_and_bad_batches():
    crops = BatchPredictor("vgg-taper-int8", crops=True, threads=1)
    rows = _rows(crops({"bytes": np.array([(PHOTOS / "gravel.jpg").read_bytes()], object)}))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["face"] == 0 and rows[0]["w"] == 320
    with pytest.raises(InputError, match="needs a 'bytes', 'path' or 'image' column"):
        crops({"id": np.array(["x"])})
    assert math.isnan(rows[0]["detector_score"]) and (rows[0]["x"], rows[0]["y"]) == (0, 0)  # the whole image
    assert {k: v.shape for k, v in to_columns([], COLUMNS).items()} == dict.fromkeys(COLUMNS, (0,))


def test_pickles_without_sessions(predictor):
    predictor.recognizer  # made
    data = pickle.dumps(predictor)
    assert len(data) < 2000  # settings only, no model bytes or sessions
    copy = pickle.loads(data)
    assert copy._rec is None and copy.model == "vgg-taper-int8"
    assert worker_threads() >= 1


def test_video_ranges_cover_the_clip_once(predictor, tmp_path):
    path = tmp_path / "clip.mp4"
    movers = [Mover((80, 70), (50, 0), 56), Mover((240, 170), (-50, 0), 56)]
    write_clip(path, (f for f, _ in moving_faces((240, 320), movers, 10.0, 25)), 10.0)
    ranges = split_video(str(path), 25, 10)
    assert [(r["start"], r["stop"]) for r in ranges] == [(0, 10), (10, 20), (20, OPEN_END)]  # the last to the end
    cols = {k: np.array([r[k] for r in ranges], object if k in ("id", "path") else np.int64) for k in ranges[0]}
    rows = _rows(predictor(cols))
    frames = sorted({r["frame"] for r in rows})
    assert frames == list(range(25)) and all(r["status"] == "ok" for r in rows)
    keys = [(r["frame"], r["face"]) for r in rows]
    assert len(keys) == len(set(keys)) == 50  # two faces a frame, none twice
    assert {r["track"] // TRACKS_PER_RANGE for r in rows} == {0, 10, 20}  # ids restart per range
    np.testing.assert_allclose(sorted({r["time_s"] for r in rows}), np.arange(25) / 10, atol=1e-6)
    bad = _rows(predictor({"path": np.array([str(tmp_path / "none.mp4")], object), "start": np.array([0]),
                           "stop": np.array([5])}))
    assert [r["status"] for r in bad] == ["error"] and "no such file" in bad[0]["error"]


def test_arrow_and_spark_schemas_are_fixed(predictor):
    empty = to_arrow([], COLUMNS)
    errors = to_arrow(predictor.rows({"bytes": np.array([b"junk"], object)}), COLUMNS)
    assert empty.schema == errors.schema and str(errors.schema.field("error").type) == "string"
    assert str(errors.schema.field("label").type) == "string"  # all None, still typed
    assert str(errors.schema.field("x").type) == "int64" and errors.column("x").to_pylist() == [None]
    assert errors.column("confidence").null_count == 1
    ddl = predictor.ddl_schema()
    assert ddl.startswith("source string, frame bigint, time_s double") and ddl.endswith("status string, error string")
    assert ddl.count(",") == len(COLUMNS) - 1


def test_scale_report():
    from fer_bench.scale import scale_markdown

    setting = {"workers": 2, "threads_per_worker": 1, "few_s": 4.0, "images_s": 14.0, "video_s": 10.0,
               "images_rows": 100, "images_bytes": 45_000, "video_rows": 900, "video_bytes": 90_000}
    md = scale_markdown({"images": 108, "video_frames": 900, "range_frames": 150,
                         "cli": {"images_s": 7.0, "video_s": 9.0}, "settings": [setting]})
    assert "| fer-batch, 2 worker(s) x 1 thread(s) | 7.7 | 0.50 | 90.0 | 0.90 | 4.0 |" in md
    assert "450 bytes a row for images, 100 for video" in md


def test_batch_predictor_never_imports_ray():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from fer_runtime.batch import BatchPredictor\n"
            f"data = open({str(PHOTOS / 'astronaut.jpg')!r}, 'rb').read()\n"
            "out = BatchPredictor('vgg-taper-int8')({'bytes': np.array([data], object)})\n"
            "assert out['status'][0] == 'ok'\n"
            "assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_wrong_model_fails_the_batch_not_each_row():
    from fer_runtime.errors import ModelError

    with pytest.raises(ModelError, match="no such model file"):
        BatchPredictor("/nowhere/model.onnx")({"bytes": np.array([b"x"], object)})


def test_a_damaged_video_range_ends_with_an_error_row_after_its_frames(predictor, tmp_path):
    path = tmp_path / "clip.mkv"  # Matroska keeps its early frames decodable when cut
    write_clip(path, (f for f, _ in moving_faces((240, 320), [Mover((80, 70), (50, 0), 56)], 10.0, 30)), 10.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cols = {"path": np.array([str(path)], object), "start": np.array([0]), "stop": np.array([30])}
    rows = _rows(predictor(cols))
    assert rows[-1]["status"] == "error" and "truncated or damaged" in rows[-1]["error"]
    good = [r["frame"] for r in rows[:-1]]
    assert good == list(range(len(good))) and len(good) >= 5 and rows[-1]["frame"] == len(good)
