"""fer-predict: detection by default, --crops, streamed table/JSON Lines/CSV rows, --annotate, failures.

The test photos (tests/data/photos/, see its README) are not FER2013: no data marker needed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_runtime import LABELS, EmotionRecognizer, Face, Prediction
from fer_runtime.app import Input, find_inputs
from fer_runtime.cli.predict import annotation_path
from fer_runtime.rows import CsvSink, JsonLinesSink, TableSink, columns, face_rows, status_row

PHOTOS = Path(__file__).parent / "data" / "photos"
ONE_FACE = ("astronaut.jpg", "grace_hopper.jpg", "cameraman.jpg")
NO_FACE = ("chelsea.jpg", "coffee.jpg", "gravel.jpg")


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_runtime", *args], capture_output=True, text=True, timeout=120)


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """The six photos in a folder with a subfolder and a symlink loop back to the top."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for name in ONE_FACE[:2] + NO_FACE[:1]:
        (root / name).write_bytes((PHOTOS / name).read_bytes())
    for name in ONE_FACE[2:] + NO_FACE[1:]:
        (root / "sub" / name).write_bytes((PHOTOS / name).read_bytes())
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "notes.txt").write_text("not an image, not picked up")
    return root


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    png = io.BytesIO()
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(png, format="PNG")
    (root / "truncated.png").write_bytes(png.getvalue()[:60])
    (root / "x.jpg").write_text("a text file with an image's name")
    return {"truncated": root / "truncated.png", "text": root / "x.jpg", "missing": root / "missing.jpg"}


# --- the command, in a subprocess ----------------------------------------------------------


def test_detects_by_default_one_row_per_face_and_no_face_rows(photo_dir):
    done = _predict(str(photo_dir), "--json")
    assert done.returncode == 0, done.stderr
    rows = _jsonl(done.stdout)
    by_name = {Path(r["source"]).name: r for r in rows}
    assert len(rows) == 6 and set(by_name) == set(ONE_FACE + NO_FACE)  # the loop did not repeat anything
    assert all(list(r) == columns(LABELS) and Path(r["source"]).is_absolute() for r in rows)
    for name in ONE_FACE:
        row = by_name[name]
        assert row["status"] == "ok" and row["face"] == 0 and row["label"] in LABELS, row
        assert min(row["w"], row["h"]) > 40 and row["detector_score"] >= 0.6
        assert abs(sum(row[f"p_{lab}"] for lab in LABELS) - 1) < 1e-2
        assert row["confidence"] == row[f"p_{row['label']}"] and row["frame"] is None and row["track"] is None
    assert all(by_name[n]["status"] == "no_face" and by_name[n]["x"] is None for n in NO_FACE)
    # the JSON row is what the library returns for the same image
    face = EmotionRecognizer().detect(PHOTOS / "astronaut.jpg")[0]
    astronaut = by_name["astronaut.jpg"]
    assert tuple(astronaut[k] for k in "xywh") == face.box and astronaut["label"] == face.prediction.label


def test_table_lists_faces_and_no_face(photo_dir):
    done = _predict(str(photo_dir / "astronaut.jpg"), str(photo_dir / "chelsea.jpg"))
    assert done.returncode == 0, done.stderr
    header, face, cat = done.stdout.splitlines()
    assert "Neutral" in header and "source" in header
    assert face.endswith(os.path.abspath(photo_dir / "astronaut.jpg")) and "no face" in cat


def test_crops_classifies_each_image_whole(photo_dir):
    done = _predict(str(photo_dir / "astronaut.jpg"), str(photo_dir / "chelsea.jpg"), "--crops", "--json", "-v")
    assert done.returncode == 0, done.stderr
    assert "session on ['CPUExecutionProvider']" in done.stderr  # -v: debug logs on stderr, rows untouched
    rows = _jsonl(done.stdout)
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["face"] == 0 and r["detector_score"] is None
                                                              for r in rows)
    with Image.open(PHOTOS / "astronaut.jpg") as im:  # a crop's box is the whole image
        assert (rows[0]["x"], rows[0]["y"], rows[0]["w"], rows[0]["h"]) == (0, 0, *im.size)
    assert rows[0]["label"] == EmotionRecognizer().predict_one(PHOTOS / "astronaut.jpg").label


def test_csv_parses_with_one_column_per_label(photo_dir):
    done = _predict(str(photo_dir / "astronaut.jpg"), str(photo_dir / "chelsea.jpg"), "--csv")
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["status"] for r in table] == ["ok", "no_face"]
    assert int(table[0]["w"]) > 40 and float(table[0]["detector_score"]) >= 0.6
    assert abs(sum(float(table[0][f"p_{lab}"]) for lab in LABELS) - 1) < 1e-2
    assert table[1]["label"] == "" and table[1]["x"] == ""


def test_failed_files_are_rows_and_exit_1(photo_dir, bad_files):
    done = _predict(str(photo_dir / "astronaut.jpg"), *map(str, bad_files.values()), "--json")
    assert done.returncode == 1
    rows = _jsonl(done.stdout)
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error"]
    errors = {Path(r["source"]).name: r["error"] for r in rows[1:]}
    assert "no such file" in errors["missing.jpg"] and "not a readable image" in errors["x.jpg"]
    assert errors["truncated.png"]
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("error: 3 of 4 inputs failed") and "Traceback" not in done.stderr


def test_model_and_provider_errors_are_clean(photo_dir, tmp_path):
    done = _predict(str(photo_dir / "astronaut.jpg"), "--model", str(tmp_path / "nope.onnx"))
    assert done.returncode == 1 and done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    assert done.stdout == ""
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("CUDA is available here")
    done = _predict(str(photo_dir / "astronaut.jpg"), "--providers", "cuda")
    assert done.returncode == 1 and "not available" in done.stderr and "Traceback" not in done.stderr


def test_bad_detector_option_is_a_usage_error(photo_dir):
    done = _predict(str(photo_dir / "astronaut.jpg"), "--score-threshold", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_help_explains_the_options():
    done = _predict("--help")
    assert done.returncode == 0
    for option in ("--crops", "--annotate", "--json", "--csv", "--min-face", "--score-threshold",
                   "--nms-threshold", "--max-size", "--no-progress", "--camera", "--detect-every", "--smoothing",
                   "--max-age", "--summary", "--plot", "--list-models", "--models-dir"):
        assert option in done.stdout, option
    assert not re.search(r"--detect(?![-\w])", done.stdout)  # hidden: accepted as a no-op only


def test_detect_flag_is_an_accepted_no_op(photo_dir):
    done = _predict(str(photo_dir / "astronaut.jpg"), "--detect", "--json")
    assert done.returncode == 0 and _jsonl(done.stdout)[0]["x"] is not None


def test_detector_defaults_come_from_the_detector():
    import inspect

    from fer_runtime import FaceDetector
    from fer_runtime.app import detector_defaults

    params = inspect.signature(FaceDetector).parameters
    names = ("min_face", "score_threshold", "nms_threshold", "max_size")
    assert detector_defaults() == {name: params[name].default for name in names}


def test_detector_options_reach_the_detector(photo_dir):
    done = _predict(str(photo_dir / "astronaut.jpg"), "--min-face", "400", "--json")
    assert done.returncode == 0 and _jsonl(done.stdout)[0]["status"] == "no_face"  # the face is ~100 px


def test_annotate_draws_boxes_under_the_same_names(photo_dir, tmp_path):
    out = tmp_path / "annotated"
    done = _predict(str(photo_dir), "--annotate", str(out), "--json")
    assert done.returncode == 0, done.stderr
    rows = {Path(r["source"]).name: r for r in _jsonl(done.stdout)}
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted([*ONE_FACE[:2], *NO_FACE[:1]] + [f"sub/{n}" for n in ONE_FACE[2:] + NO_FACE[1:]])
    for name in ONE_FACE[:2]:
        before = np.asarray(Image.open(photo_dir / name).convert("RGB"), np.float32)
        after = np.asarray(Image.open(out / name).convert("RGB"), np.float32)
        assert after.shape == before.shape
        x, y, w, h = (rows[name][k] for k in "xywh")
        edge = np.abs(after[y + h - 2 : y + h, x : x + w] - before[y + h - 2 : y + h, x : x + w]).mean()
        inside = np.abs(after[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3]
                        - before[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3]).mean()
        assert edge > 40 and inside < 4, (edge, inside)  # the outline is drawn; the face itself is not painted over
    cat_before = np.asarray(Image.open(photo_dir / "chelsea.jpg").convert("RGB"), np.float32)
    assert np.abs(np.asarray(Image.open(out / "chelsea.jpg"), np.float32) - cat_before).mean() < 2  # nothing drawn


def test_annotate_crops_tags_the_label(photo_dir, tmp_path):
    done = _predict(str(photo_dir / "astronaut.jpg"), "--crops", "--annotate", str(tmp_path))
    assert done.returncode == 0, done.stderr
    before = np.asarray(Image.open(photo_dir / "astronaut.jpg"), np.float32)
    after = np.asarray(Image.open(tmp_path / "astronaut.jpg"), np.float32)
    assert after.shape == before.shape and np.abs(after[:8, :40] - before[:8, :40]).mean() > 40  # the tag, top left


def test_annotate_never_overwrites_an_input(photo_dir, tmp_path):
    image = tmp_path / "astronaut.jpg"
    image.write_bytes((photo_dir / "astronaut.jpg").read_bytes())
    done = _predict(str(image), "--annotate", str(tmp_path), "--json")
    assert done.returncode == 1 and "annotated copy not written" in done.stderr
    (row,) = _jsonl(done.stdout)  # the face's row is kept, the failed annotation noted in it
    assert row["status"] == "ok" and row["label"] in LABELS and "overwrite" in row["error"]
    assert image.read_bytes() == (photo_dir / "astronaut.jpg").read_bytes()
    table = _predict(str(image), "--annotate", str(tmp_path))
    assert table.returncode == 1 and "(annotated copy not written" in table.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_json_rows_stream_before_the_run_ends(photo_dir, tmp_path):
    """The second input is a named pipe, which blocks the run until written: the first image's row
    must already be out by then."""
    fifo = tmp_path / "wait.png"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "fer_runtime", str(photo_dir / "astronaut.jpg"), str(fifo), "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        assert ready, "no row came out while the run was blocked on its second input"
        first = json.loads(proc.stdout.readline())
        assert first["status"] == "ok" and Path(first["source"]).name == "astronaut.jpg"
        assert proc.poll() is None
        with open(fifo, "wb") as pipe:
            pipe.write(b"not an image")
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert json.loads(out)["status"] == "error" and proc.returncode == 1


# --- in process: finding inputs, sinks, names --------------------------------------------


def test_find_inputs_walks_sorted_and_survives_a_symlink_loop(photo_dir, tmp_path):
    items = list(find_inputs([photo_dir, tmp_path / "given.txt", "rtsp://camera/1"]))
    names = [item.name.as_posix() for item in items]
    assert names == ["astronaut.jpg", "chelsea.jpg", "grace_hopper.jpg", "sub/cameraman.jpg", "sub/coffee.jpg",
                     "sub/gravel.jpg", "given.txt", "1"]  # files given by name are kept whatever their suffix
    assert all(item.error is None for item in items) and items[-1].path == "rtsp://camera/1"  # URIs as given
    globbed = list(find_inputs([str(photo_dir / "sub" / "c*.jpg")]))
    assert [Path(i.path).name for i in globbed] == ["cameraman.jpg", "coffee.jpg"]


def test_find_inputs_reports_unreadable_folders(tmp_path, monkeypatch):
    import fer_runtime.app as app

    locked = tmp_path / "locked"

    def walk(root, onerror, followlinks):  # os.walk as it goes when a subfolder cannot be listed
        onerror(PermissionError(13, "Permission denied", str(locked)))
        yield str(root), [], []

    monkeypatch.setattr(app.os, "walk", walk)
    items = list(find_inputs([tmp_path]))
    assert items == [Input(str(locked), Path("locked"), "cannot list the folder (Permission denied)")]


def _rows() -> list[list[dict]]:
    """Three images' rows: one with two faces, one with none, one that failed."""
    vector = np.full(len(LABELS), 0.5 / (len(LABELS) - 1), np.float32)
    vector[3] = 0.5
    pred = Prediction(LABELS, vector)
    faces = [Face((1, 2, 30, 40), 0.91234, None, pred, i) for i in range(2)]
    return [face_rows("/a.jpg", faces), face_rows("/b.jpg", []),
            [status_row("/c.jpg", "error", error="not a readable image")]]


class FlushLog(io.StringIO):
    """A stream that records how much had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed_at: list[int] = []

    def flush(self) -> None:
        self.flushed_at.append(len(self.getvalue()))


@pytest.mark.parametrize("sink_cls", [JsonLinesSink, CsvSink, TableSink])
def test_sinks_flush_after_each_image(sink_cls):
    stream = FlushLog()
    sink = sink_cls(stream, LABELS)
    header = 0 if sink_cls is JsonLinesSink else 1
    for k, image_rows in enumerate(_rows()):
        lines_before = stream.getvalue().count("\n")
        sink.write(image_rows)
        assert stream.getvalue().count("\n") == lines_before + len(image_rows) + (header if k == 0 else 0)
        assert stream.flushed_at[-1] == len(stream.getvalue())  # flushed once the image's rows are out
    assert len(stream.flushed_at) == 3
    empty = FlushLog()
    sink_cls(empty, LABELS).close()  # a run without rows still gets its header
    assert empty.getvalue().count("\n") == header


def test_json_lines_sink_rows():
    stream = io.StringIO()
    sink = JsonLinesSink(stream, LABELS)
    for image_rows in _rows():
        sink.write(image_rows)
    rows = _jsonl(stream.getvalue())
    assert [r["status"] for r in rows] == ["ok", "ok", "no_face", "error"]
    assert rows[1]["face"] == 1 and (rows[0]["x"], rows[0]["h"]) == (1, 40) and rows[0]["detector_score"] == 0.91234
    assert rows[0]["confidence"] == 0.5 and rows[0]["label"] == "Happy" and "raw_p_Happy" not in rows[0]
    assert rows[3]["error"] == "not a readable image" and rows[3]["label"] is None


def test_csv_sink_rows():
    stream = io.StringIO()
    sink = CsvSink(stream, LABELS, raw=True)
    for image_rows in _rows():
        sink.write(image_rows)
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert list(rows[0]) == columns(LABELS, raw=True)
    assert [r["status"] for r in rows] == ["ok", "ok", "no_face", "error"]
    assert (rows[0]["x"], rows[0]["h"], rows[0]["p_Happy"], rows[0]["raw_p_Happy"]) == ("1", "40", "0.5", "0.5")
    assert rows[3]["error"] == "not a readable image" and rows[2]["label"] == ""


def test_table_sink_rows():
    stream = io.StringIO()
    sink = TableSink(stream, LABELS)
    for image_rows in _rows():
        sink.write(image_rows)
    header, face0, face1, none, error = stream.getvalue().splitlines()
    assert "1,2,30,40" in face0 and "Happy" in face0 and face0.endswith("/a.jpg")
    assert "no face" in none and error.endswith("/c.jpg: not a readable image")


def test_annotation_names_keep_the_relative_name_and_never_collide(tmp_path):
    used: set[Path] = set()
    inputs = frozenset({tmp_path / "out" / "y.jpg"})
    first = annotation_path(tmp_path / "out", Input(str(tmp_path / "a" / "x.jpg"), Path("x.jpg")), used, inputs)
    second = annotation_path(tmp_path / "out", Input(str(tmp_path / "b" / "x.jpg"), Path("x.jpg")), used, inputs)
    odd = annotation_path(tmp_path / "out", Input(str(tmp_path / "photo.heic"), Path("photo.heic")), used, inputs)
    clip = annotation_path(tmp_path / "out", Input(str(tmp_path / "c.avi"), Path("c.avi")), used, inputs, video=True)
    assert (first.name, second.name, odd.name, clip.name) == ("x.jpg", "x-2.jpg", "photo.heic.png", "c.avi.mp4")
    with pytest.raises(OSError, match="overwrite"):  # another input of the run, not only the file itself
        annotation_path(tmp_path / "out", Input(str(tmp_path / "y.jpg"), Path("y.jpg")), used, inputs)
