"""One result model: a face means the same in every output (fer-predict on a photo and on a video,
fer-batch, to_dict, to_dataframe); drawing; bad settings; naming models."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fer_runtime import (
    LABELS,
    ConfigError,
    CropConfig,
    EmotionRecognizer,
    Face,
    FaceDetector,
    Prediction,
    TrackedFace,
    VideoAnalyzer,
    annotate,
    columns,
    to_dataframe,
)
from fer_runtime.batch import BatchPredictor, output_columns
from fer_runtime.rows import face_rows, to_arrow
from fer_runtime.tracking import EmaSmoother, IouTracker

PHOTOS = Path(__file__).parent / "data" / "photos"


@pytest.fixture(scope="module")
def same_face(tmp_path_factory) -> tuple[Path, Path]:
    """A one-frame video of a photo (MJPG in AVI) and that frame as a lossless PNG: the same pixels."""
    root = tmp_path_factory.mktemp("same")
    bgr = cv2.imread(str(PHOTOS / "astronaut.jpg"))
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (bgr.shape[1], bgr.shape[0]))
    writer.write(bgr)
    writer.release()
    ok, frame = cv2.VideoCapture(str(video)).read()
    assert ok
    cv2.imwrite(str(root / "photo.png"), frame)
    return root / "photo.png", video


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fer_runtime", *args, "--no-progress"], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


FACE_COLUMNS = [c for c in columns(LABELS, raw=True) if c not in ("source", "frame", "time_s", "track")]


def test_one_face_is_the_same_row_in_every_output(same_face):
    photo, video = same_face
    rows = list(csv.DictReader(io.StringIO(_cli(str(photo), str(video), "--csv"))))
    assert list(rows[0]) == columns(LABELS, raw=True) and len(rows) == 2
    from_photo, from_video = rows
    assert (from_photo["frame"], from_photo["track"], from_video["frame"], from_video["track"]) == ("", "", "0", "1")
    assert {k: from_photo[k] for k in FACE_COLUMNS} == {k: from_video[k] for k in FACE_COLUMNS}
    as_json = [json.loads(line) for line in _cli(str(photo), "--json").splitlines()]
    assert list(as_json[0]) == columns(LABELS)  # a photo-only run has no raw_p_ columns
    assert {k: "" if v is None else str(v) for k, v in as_json[0].items() if k in FACE_COLUMNS} == \
        {k: from_photo[k] for k in FACE_COLUMNS if not k.startswith("raw_")}
    # fer-batch's rows (its per-worker predictor, written to Parquet) carry the same columns and values
    predictor = BatchPredictor(threads=1)
    batch = predictor.rows({"path": np.array([str(photo)], object)}) + \
        predictor.rows({"path": np.array([str(video)], object), "start": np.array([0]), "stop": np.array([1])})
    table = to_arrow(batch, output_columns())
    assert table.column_names == columns(LABELS, raw=True)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    parquet = pq.read_table(pa.BufferReader(buffer.getvalue())).to_pylist()
    for written, printed in zip(parquet, rows):
        assert {k: "" if written[k] is None else str(written[k]) for k in FACE_COLUMNS} == \
            {k: printed[k] for k in FACE_COLUMNS}
    # and the library's own dict of the face
    face = EmotionRecognizer().detect(photo)[0].to_dict()
    assert face["box"] == [int(from_photo[k]) for k in "xywh"] and face["label"] == from_photo["label"]
    assert {f"p_{k}": str(v) for k, v in face["probabilities"].items()} == \
        {f"p_{k}": from_photo[f"p_{k}"] for k in LABELS}
    assert str(face["confidence"]) == from_photo["confidence"] and str(face["detector_score"]) == \
        from_photo["detector_score"]


def test_to_dict_is_json_ready_and_tracked_faces_keep_both_predictions(same_face):
    photo, _ = same_face
    rec = EmotionRecognizer("vgg-taper-int8")
    image = np.asarray(Image.open(photo).convert("RGB"))
    face = rec.detect(image)[0]
    d = json.loads(json.dumps(face.to_dict()))
    assert set(d) == {"face", "box", "detector_score", "landmarks", "label", "confidence", "probabilities"}
    assert len(d["landmarks"]) == 5 and list(d["probabilities"]) == list(rec.labels)
    frames = list(VideoAnalyzer(rec.pipeline, smoothing_s=10.0).run([image, image[:, ::-1].copy()], fps=10.0))
    second = frames[1].faces[0]
    assert isinstance(second, TrackedFace) and second.track == 1 and second.smoothed != second.prediction
    out = json.loads(json.dumps(frames[1].to_dict()))
    assert out["frame"] == 1 and out["faces"][0]["track"] == 1
    assert out["faces"][0]["raw"] == second.prediction.to_dict()  # the frame's own, beside the smoothed
    assert out["faces"][0]["probabilities"] == second.smoothed.to_dict()["probabilities"]
    row = frames[1].to_rows("clip")[0]
    assert row["p_Happy"] == round(second.smoothed.probabilities["Happy"], 6)
    assert row["raw_p_Happy"] == round(second.prediction.probabilities["Happy"], 6)


def test_prediction_holds_its_vector_and_labels():
    vector = np.array([0.1, 0.0, 0.0, 0.7, 0.1, 0.05, 0.05], np.float32)
    p = Prediction(LABELS, vector)
    vector[3] = 0  # the prediction keeps its own copy
    assert (p.label, p.index, p.confidence) == ("Happy", 3, pytest.approx(0.7))
    assert dict(p.probabilities)["Sad"] == pytest.approx(0.1) and list(p.probabilities) == list(LABELS)
    with pytest.raises(ValueError):
        p.vector[0] = 1  # read-only
    with pytest.raises(ValueError, match="one probability per label"):
        Prediction(LABELS, np.ones(3))
    custom = Prediction(("calm", "tense"), np.array([0.2, 0.8]))
    assert face_rows("x", [Face((0, 0, 4, 4), None, None, custom)])[0]["p_tense"] == 0.8  # the model's own labels


def test_to_dataframe_round_trips(same_face):
    photo, video = same_face
    rec = EmotionRecognizer("vgg-taper-int8")
    faces = rec.detect(photo)
    frame = to_dataframe(faces, source="photo.png")
    assert list(frame.columns) == columns(rec.labels) and len(frame) == 1
    assert str(frame["x"].dtype) == "Int64" and frame["frame"].isna().all()
    assert frame.iloc[0]["label"] == faces[0].prediction.label
    printed = list(csv.DictReader(io.StringIO(_cli(str(photo), str(video), "--csv"))))
    again = to_dataframe(printed)  # rows read back from a CSV
    assert list(again.columns) == columns(LABELS, raw=True) and again["track"].tolist()[1] == 1
    results = list(VideoAnalyzer(rec.pipeline).run(str(video)))
    video_frame = to_dataframe(results, source="clip")
    assert list(video_frame.columns) == columns(rec.labels, raw=True) and video_frame["track"].tolist() == [1]
    back = [dict(r) for r in video_frame.astype(object).where(video_frame.notna(), None).to_dict("records")]
    assert back == [dict(zip(video_frame.columns, [results[0].to_rows("clip")[0].get(c) for c in video_frame.columns]))]


def test_annotate_draws_on_rgb_grey_and_bgr_without_changing_the_input():
    rgb = np.asarray(Image.open(PHOTOS / "astronaut.jpg").convert("RGB"))
    rec = EmotionRecognizer("vgg-taper-int8")
    faces = rec.detect(rgb)
    x, y, w, h = faces[0].box
    for image, order in ((rgb, "rgb"), (np.ascontiguousarray(rgb[:, :, ::-1]), "bgr"), (rgb[:, :, 1].copy(), "rgb")):
        before = image.copy()
        out = annotate(image, faces, color_order=order)
        np.testing.assert_array_equal(image, before)  # a copy comes back; the input is untouched
        assert out.shape == (*rgb.shape[:2], 3) and out.dtype == np.uint8
        green = out[y + h - 1, x + w // 2]
        assert tuple(green) == ((0, 255, 0) if order == "rgb" else (0, 255, 0)[::-1])  # RGB green either way
        inside = out[y + h // 2, x + w // 2].astype(int) - (np.repeat(before[y + h // 2, x + w // 2], 3)
                                                            if before.ndim == 2 else before[y + h // 2, x + w // 2])
        assert np.abs(inside).max() == 0  # the face itself is not painted over
    tracked = TrackedFace(*(getattr(faces[0], f) for f in ("box", "detector_score", "landmarks", "prediction",
                                                           "index")), track=7)
    assert not np.array_equal(annotate(rgb, [tracked]), annotate(rgb, faces))  # the track id is written too


@pytest.mark.parametrize("make", [
    lambda: EmotionRecognizer(threads=0),
    lambda: EmotionRecognizer(color_order="hsv"),  # type: ignore[arg-type]
    lambda: EmotionRecognizer(batch_size=0),
    lambda: EmotionRecognizer(max_pixels=-1),
    lambda: FaceDetector(score_threshold=2),
    lambda: FaceDetector(nms_threshold=0),
    lambda: FaceDetector(min_face=0),
    lambda: FaceDetector(max_size=8),
    lambda: CropConfig(shift=3),
    lambda: VideoAnalyzer(EmotionRecognizer("vgg-taper-int8").pipeline, detect_every=0),
    lambda: VideoAnalyzer(EmotionRecognizer("vgg-taper-int8").pipeline, smoothing_s=-1),
    lambda: IouTracker(iou_threshold=0),
    lambda: EmaSmoother(float("inf")),
])
def test_every_bad_setting_is_a_config_error_and_a_value_error(make):
    with pytest.raises(ConfigError) as info:
        make()
    assert isinstance(info.value, ValueError) and str(info.value)


def test_list_models_prints_every_model():
    done = subprocess.run([sys.executable, "-m", "fer_runtime", "--list-models"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["name", "precision", "where", "size", "PublicTest"]
    default = next(line for line in lines if line.startswith("vgg-deep *"))
    assert "fp32" in default and "bundled" in default and "69.88%" in default
    assert any(line.startswith("vgg-small-int8") and "checkout" in line for line in lines)
