"""The web app (web/): its JavaScript held to the Python runtime, in Node and in a real headless Chromium.

Python writes the goldens here, at test time: tracking sequences run through ``VideoAnalyzer`` (its
IouTracker and EmaSmoother) with the CSV and JSON Lines its sinks write for them, the test photos (as
PNG) with the faces ``EmotionRecognizer`` finds, and a ``.y4m`` clip of moving faces for Chromium's fake
camera. ``node --test`` in web/ then runs the unit tests (fast tier) and the browser tests (``slow``: about a
minute) against them. Node, npm and Chromium are part of CI (.ci/run installs them): a missing one fails these
tests, it does not skip them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_runtime import EmotionRecognizer, VideoAnalyzer
from fer_runtime.detector import Detection
from fer_runtime.labels import LABELS
from fer_runtime.pipeline import clip_box
from fer_runtime.results import Face, Prediction
from fer_runtime.rows import CsvSink, JsonLinesSink
from fer_runtime.video import VideoFrame

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web"
PHOTOS = REPO / "tests" / "data" / "photos"
MODEL = "vgg-taper-int8"  # the web app's default: the fast variant
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


# --- tracking goldens: VideoAnalyzer on scripted detections ------------------------------------------

@dataclass
class ScriptedPipeline:
    """Stands in for a FacePipeline: each frame's detections and probabilities are given, so VideoAnalyzer's
    own tracking, smoothing and rows run on known inputs (no model)."""

    frames: list[list[tuple[tuple[float, ...], float, np.ndarray]]]
    max_pixels: int | None = None
    color_order: str = "rgb"
    shown: int = field(default=-1)

    @property
    def detector(self) -> ScriptedPipeline:
        return self

    def detect_array(self, arr: np.ndarray, order: str) -> list[Detection]:
        self.shown += 1
        return [Detection(box, score, ((0.0, 0.0),) * 5) for box, score, _ in self.frames[self.shown]]  # type: ignore[arg-type]

    def classify(self, arr: np.ndarray, found: list[Detection], order: str) -> list[Face]:
        probs = {tuple(box): p for box, _, p in self.frames[self.shown]}
        h, w = arr.shape[:2]
        return [Face(clip_box(d.box, h, w), d.score, d.landmarks, Prediction(LABELS, probs[tuple(d.box)]), i)
                for i, d in enumerate(found)]


@dataclass
class ScriptedVideo:
    """Stands in for a VideoSource: blank 640x480 frames at the given times."""

    times: list[float]
    color_order: str = "rgb"
    dropped: int = 0

    def __iter__(self):
        blank = np.zeros((480, 640, 3), np.uint8)
        return (VideoFrame(i, t, blank) for i, t in enumerate(self.times))


def scenario(rng: np.random.Generator, *, faces: int, seconds: float, fps: float, jitter_s: float = 0.0,
             noise_px: float = 0.0, miss: float = 0.0, away: tuple[float, float] | None = None,
             speed: float = 120.0, size: tuple[int, int] = (480, 640)) -> tuple[list[float], list[list]]:
    """Frame times and per-frame detections (float32 boxes, scores, probabilities) of faces moving in
    straight lines, bouncing off the edges and reaching past them, some detections missed, one face away
    for a while."""
    from fer_bench.clips import _bounce

    h, w = size
    times, t = [], 0.0
    while t < seconds:
        times.append(round(t, 6))
        t += 1 / fps + (rng.uniform(-jitter_s, jitter_s) if jitter_s else 0.0)
    starts = rng.uniform([0, 0], [w - 100, h - 100], (faces, 2))
    velocities = rng.uniform(-speed, speed, (faces, 2))
    sides = rng.uniform(60, 130, faces)
    frames = []
    for t in times:
        found = []
        for k in range(faces):
            if (away and k == 0 and away[0] <= t < away[1]) or rng.random() < miss:
                continue
            x, y = (_bounce(float(p), -20.0, float(hi)) for p, hi in zip(starts[k] + velocities[k] * t, (w - 60, h - 60)))
            x, y = np.array([x, y]) + rng.normal(0, noise_px, 2)
            box = tuple(float(v) for v in np.float32([x, y, sides[k], sides[k] * 1.2]))
            probs = rng.dirichlet(np.full(len(LABELS), 0.6)).astype(np.float32)
            found.append((box, float(np.float32(rng.uniform(0.6, 1.0))), probs))
        found.sort(key=lambda f: -f[1])
        frames.append(found)
    return times, frames


SCENARIOS = {  # name: (scenario arguments, VideoAnalyzer options)
    "steady-30fps": ({"faces": 3, "seconds": 3, "fps": 30}, {}),
    "jittered-times-missed-faces": ({"faces": 3, "seconds": 4, "fps": 20, "jitter_s": 0.02, "noise_px": 3.0,
                                     "miss": 0.15, "away": (1.0, 2.3)}, {}),
    "fast-faces-prediction": ({"faces": 2, "seconds": 4, "fps": 10, "speed": 450.0, "noise_px": 1.0}, {}),
    "crowd-short-memory": ({"faces": 6, "seconds": 3, "fps": 15, "noise_px": 4.0, "miss": 0.2},
                           {"smoothing_s": 0.25, "iou_threshold": 0.5, "max_age_s": 0.3}),
    "no-smoothing": ({"faces": 2, "seconds": 2, "fps": 25, "noise_px": 2.0, "miss": 0.3, "away": (0.5, 0.8)},
                     {"smoothing_s": 0.0}),
}


def write_tracking_goldens(folder: Path) -> None:
    rng = np.random.default_rng(30)
    entries = []
    for name, (args, options) in SCENARIOS.items():
        times, frames = scenario(rng, **args)
        analyzer = VideoAnalyzer(ScriptedPipeline(frames), **options)  # type: ignore[arg-type]
        results = [result for _, result in analyzer.follow(ScriptedVideo(times))]  # type: ignore[arg-type]
        csv_text, jsonl_text = io.StringIO(), io.StringIO()
        for sink in (CsvSink(csv_text, LABELS, raw=True), JsonLinesSink(jsonl_text, LABELS, raw=True)):
            for result in results:
                sink.write(result.to_rows(name))
            sink.close()
        (folder / f"{name}.csv").write_text(csv_text.getvalue())
        (folder / f"{name}.jsonl").write_text(jsonl_text.getvalue())
        entries.append({
            "name": name, "options": options, "size": [480, 640],
            "frames": [{"index": i, "time_s": t, "faces": [{"box": list(b), "score": s, "probabilities": p.tolist()}
                                                            for b, s, p in found]}
                       for i, (t, found) in enumerate(zip(times, frames))],
            "expected": [{"tracks": [f.track for f in r.faces], "smoothed": [f.smoothed.vector.tolist() for f in r.faces]}
                         for r in results],
            "csv": f"{name}.csv", "jsonl": f"{name}.jsonl"})
    (folder / "tracking.json").write_text(json.dumps({"labels": list(LABELS), "scenarios": entries}))


# --- photo goldens: the faces EmotionRecognizer finds, the photos as PNG (lossless: the same pixels in PIL and Chromium)

def photo_scenes() -> dict[str, np.ndarray]:
    """The test photos and an 8-face 1280x720 frame composed as BENCHMARKS.md composes them."""
    from fer_bench.scenes import multi_face_frame, photo_faces

    from fer_runtime import FaceDetector

    scenes = {}
    for path in sorted(PHOTOS.glob("*.jpg")):
        with Image.open(path) as im:
            scenes[f"{path.stem}.png"] = np.asarray(im.convert("RGB"))
    eight, _ = multi_face_frame(photo_faces(FaceDetector(threads=1)), [40, 60, 80, 100, 120, 150, 180, 220],
                                np.random.default_rng(1))
    scenes["eight-faces.png"] = eight
    return scenes


def write_photo_goldens(folder: Path) -> None:
    """The faces ``EmotionRecognizer.detect`` finds, with the detector's float boxes and each face's 48x48
    grey crop before equalization (``reference_faces``: FacePipeline's steps, as the portable checks use)."""
    from fer_export.portable import reference_faces

    from fer_runtime import FaceDetector

    recognizer, detector = EmotionRecognizer(MODEL, threads=1), FaceDetector(threads=1)
    entries = []
    for name, image in photo_scenes().items():
        Image.fromarray(image).save(folder / name)
        faces, ref = recognizer.detect(image), reference_faces(image, recognizer, detector)
        assert np.array_equal(ref.probabilities, np.array([f.prediction.vector for f in faces]).reshape(-1, 7))
        entries.append({"file": name, "size": list(image.shape[:2]), "faces": [
            {"box": list(f.box), "detector_box": ref.boxes[i].tolist(), "score": f.detector_score,
             "label": f.prediction.label, "probabilities": f.prediction.vector.tolist(),
             "crop": ref.crops[i].ravel().tolist()} for i, f in enumerate(faces)]})
    (folder / "photos.json").write_text(json.dumps({"model": MODEL, "labels": list(LABELS), "photos": entries}))


# --- the fake camera's clip: faces moving in lanes (benchmarks/clips.py), as a .y4m file

CLIP = {"size": (480, 640), "fps": 10, "seconds": 6.0, "faces": 2}


def write_y4m(path: Path, frames) -> int:
    """RGB frames as a YUV4MPEG2 file (4:2:0, full-range BT.601, as JPEG), what Chromium's fake camera plays."""
    count = 0
    with path.open("wb") as out:
        for frame in frames:
            h, w = frame.shape[:2]
            if count == 0:
                out.write(f"YUV4MPEG2 W{w} H{h} F{CLIP['fps']}:1 Ip A1:1 C420jpeg\n".encode())
            rgb = frame.astype(np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            planes = [y] + [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (cb, cr)]
            out.write(b"FRAME\n" + b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes))
            count += 1
    return count


def write_camera_clip(folder: Path) -> dict[str, object]:
    from fer_bench.clips import Mover, moving_faces

    size, fps = CLIP["size"], CLIP["fps"]
    frames = int(CLIP["seconds"] * fps)
    # Two faces in lanes of their own at a webcam subject's pace (40 and 30 px/s): they stay in the frame,
    # and a slow first inference (0.4 s) leaves the tracker IoU enough to follow them.
    movers = [Mover((200.0, 130.0), (40.0, 0.0), 90), Mover((440.0, 350.0), (-30.0, 0.0), 100)]
    written = write_y4m(folder / "camera.y4m", (f for f, _ in moving_faces(size, movers, fps, frames)))
    meta = {"file": "camera.y4m", "frames": written, "fps": fps, "seconds": CLIP["seconds"], "faces": CLIP["faces"]}
    (folder / "camera.json").write_text(json.dumps(meta))
    return meta


# --- number formats: values where a port of round() and repr() goes wrong ---------------------------

def write_format_goldens(folder: Path) -> None:
    rng = np.random.default_rng(6)
    values = [0.0, 1.0, 0.5, 123.5, 1e16, 2.5e16, 1e-4, 5e-5, 1e-6, 5e-7, 4.9e-7, 2.5e-7, 0.1, 1 / 3, -2 / 3, -1e-5,
              *(k / 128 for k in range(1, 256, 2)), *(k / 2 ** 20 for k in range(1, 60, 7)),
              *rng.random(300).tolist(), *(rng.random(100) * 1e-4).tolist(),
              *np.float32(rng.dirichlet(np.full(7, 0.3), 40)).ravel().astype(float).tolist()]
    floats = [{"value": v, "rounded": round(v, 6), "repr": repr(float(v)), "rounded_repr": repr(round(v, 6))}
              for v in map(float, values)]
    boxes = []
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 800, 2))
        box = tuple(float(v) for v in np.float32(rng.uniform([-50, -50, 0, 0], [w + 20, h + 20, 300, 300])))
        if rng.random() < 0.3:  # halves, where rounding to even matters
            box = tuple(float(np.floor(v) + 0.5) for v in box)
        boxes.append({"box": list(box), "size": [h, w], "clipped": list(clip_box(box, h, w))})
    (folder / "formats.json").write_text(json.dumps({"floats": floats, "boxes": boxes}))


# --- the test: build, write the goldens, run node --test --------------------------------------------

def build_app() -> None:
    """What npm run build does (web/build.py): onnxruntime-web's files and the portable models, checked."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fer_web_build", WEB / "build.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.copy_ort()
    module.export_models(MODEL)


def run_node(goldens: Path, tests: list[str], passed: int) -> None:
    """``node --test`` on web/test/ files against the goldens in ``goldens``. Node, npm and Chromium are part
    of CI: a missing one fails the test rather than skipping it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed (Node 20+): the web app's tests run in Node and Chromium")
    if not all((WEB / "node_modules" / p / "package.json").is_file() for p in ("onnxruntime-web", "playwright-core")):
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    env = {**os.environ, "FER_WEB_GOLDENS": str(goldens), "CHROMIUM_PATH": CHROMIUM}
    done = subprocess.run([node, "--test", *(f"test/{name}" for name in tests)], cwd=WEB, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "# fail 0" in done.stdout and f"# pass {passed}\n" in done.stdout, done.stdout[-3000:]
    print("\n".join(line for line in done.stdout.splitlines() if line.lstrip().startswith("# ")))  # measured figures


def test_web_javascript_equals_the_python_runtime(tmp_path: Path) -> None:
    """Tracking, smoothing, rows and number text (and the static server) in Node, against the goldens."""
    write_tracking_goldens(tmp_path)
    write_format_goldens(tmp_path)
    run_node(tmp_path, ["tracking.test.mjs", "rows.test.mjs", "server.test.mjs"], passed=16)


@pytest.mark.slow
def test_web_app_in_chromium(tmp_path: Path) -> None:
    """The built app in headless Chromium (Debian's, through playwright-core), with and without cross-origin
    isolation: own files only, the photos' faces, a fake camera's tracks (a multi-process run: about a
    minute on 2 cores)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is needed at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)")
    build_app()
    write_photo_goldens(tmp_path)
    write_camera_clip(tmp_path)
    run_node(tmp_path, ["browser.test.mjs"], passed=6)
