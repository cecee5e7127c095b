"""fer-predict and whole-frame detection."""

from __future__ import annotations

import builtins
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_runtime import EmotionRecognizer, Face, MissingExtraError

pytestmark = pytest.mark.data


def _frame_with_faces(faces: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A 640x480 gray frame with the faces enlarged to 160 px, side by side."""
    import cv2

    frame = np.full((480, 640), 90, np.uint8)
    corners = []
    for i, face in enumerate(faces):
        x, y = 40 + i * 200, 150
        frame[y : y + 160, x : x + 160] = cv2.resize(face, (160, 160), interpolation=cv2.INTER_CUBIC)
        corners.append((x, y))
    return frame, corners


@pytest.fixture(scope="module")
def frontal_faces(fer_data) -> np.ndarray:
    """PublicTest faces the Haar cascade finds when shown alone (FER2013 crops are tight)."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    picked = []
    for face in fer_data.split("PublicTest").images[:400]:
        frame, _ = _frame_with_faces(face[None])
        if len(cascade.detectMultiScale(frame, 1.1, 5, minSize=(24, 24))) == 1:
            picked.append(face)
        if len(picked) == 3:
            break
    assert len(picked) == 3, "the cascade found too few FER2013 faces"
    return np.stack(picked)


def test_detect_finds_and_classifies_faces(frontal_faces):
    rec = EmotionRecognizer()
    frame, corners = _frame_with_faces(frontal_faces)
    found = rec.detect(np.dstack([frame] * 3))
    assert len(found) == 3 and all(isinstance(f, Face) for f in found)
    for face in found:
        x, y, w, h = face.box
        assert any(abs(x - cx) < 60 and abs(y - cy) < 60 for cx, cy in corners), face.box
        assert 80 < w < 260 and face.prediction.label in rec.labels
    assert rec.detect(np.full((480, 640), 90, np.uint8)) == []


def test_detect_without_opencv_names_the_extra(monkeypatch):
    from fer_runtime import detect as detect_mod

    detect_mod._cascade.cache_clear()
    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(MissingExtraError, match=r"pip install 'fer-edge\[detect\]'"):
        EmotionRecognizer().detect(np.zeros((100, 100), np.uint8))
    monkeypatch.setattr(builtins, "__import__", real_import)
    detect_mod._cascade.cache_clear()


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_runtime", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, fer_data, frontal_faces) -> Path:
    root = tmp_path_factory.mktemp("images")
    faces = fer_data.split("PublicTest").images
    Image.fromarray(faces[0]).save(root / "a.png")
    (root / "nested").mkdir()
    Image.fromarray(np.dstack([faces[1]] * 3)).save(root / "nested" / "b.jpg", quality=95)
    frame, _ = _frame_with_faces(frontal_faces[:2])
    Image.fromarray(frame).save(root / "frame.png")
    return root


def test_fer_predict_table_json_csv(image_dir):
    done = _predict(str(image_dir / "a.png"), str(image_dir / "nested"))
    assert done.returncode == 0, done.stderr
    assert "a.png" in done.stdout and "b.jpg" in done.stdout and "Neutral" in done.stdout.splitlines()[0]
    done = _predict(str(image_dir), "--json")
    rows = json.loads(done.stdout)
    assert [Path(r["file"]).name for r in rows] == ["a.png", "frame.png", "b.jpg"]
    rec = EmotionRecognizer()
    assert rows[0]["label"] == rec.predict_one(np.asarray(Image.open(image_dir / "a.png"))).label
    done = _predict(str(image_dir / "a.png"), "--csv")
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert table[0]["label"] in rec.labels and abs(sum(float(table[0][lab]) for lab in rec.labels) - 1) < 1e-2


def test_fer_predict_detect(image_dir):
    done = _predict(str(image_dir / "frame.png"), "--detect", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 2 and all(len(r["box"]) == 4 for r in rows)


def test_fer_predict_skips_unreadable_files_and_fails(image_dir, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    done = _predict(str(image_dir / "a.png"), str(tmp_path / "broken.png"), str(tmp_path / "missing.jpg"))
    assert done.returncode == 1
    assert "a.png" in done.stdout
    assert "skipped" in done.stderr and "broken.png" in done.stderr and "missing.jpg" in done.stderr
    done = _predict(str(image_dir / "a.png"), "--model", str(tmp_path / "nope.onnx"))
    assert done.returncode == 1 and done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    done = _predict(str(image_dir / "a.png"), "--providers", "cuda")
    assert done.returncode == 1 and "not available" in done.stderr
    done = _predict("--help")
    assert done.returncode == 0 and "--detect" in done.stdout
