"""The web app (web/): its JavaScript held to the Python runtime, in Node and in a real headless Chromium.

Python writes the goldens here, at test time: tracking sequences run through ``VideoAnalyzer`` (its
IouTracker and EmaSmoother) with the CSV and JSON Lines its sinks write for them, the test photos (as
PNG) with the faces ``EmotionRecognizer`` finds, and a ``.y4m`` clip of moving faces for Chromium's fake
camera. ``node --test`` in web/ then runs the unit tests and the browser tests against them. Node, npm and
Chromium are part of CI (.ci/run installs them): a missing one fails these tests, it does not skip them.
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
            x, y = (starts[k] + velocities[k] * t) % (w + 40, h + 40) - 20 + rng.normal(0, noise_px, 2)
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
    "fast-faces-prediction": ({"faces": 2, "seconds": 3, "fps": 10, "speed": 500.0, "noise_px": 1.0}, {}),
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
