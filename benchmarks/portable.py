"""The portable models against the NumPy path on the same inputs: predict_proba and detect latency.

Both contenders answer the same question from the same uint8 RGB arrays: ``EmotionRecognizer.
predict_proba`` (NumPy preprocessing + the classifier session) against the crop model (one session
doing both), and ``EmotionRecognizer.detect`` (NumPy blob, YuNet session, NumPy decode and NMS,
NumPy crops, classifier session) against the frame model (one session). Calls are interleaved round
by round in a shuffled order after a warm-up; medians and tails per call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_bench.detection import one_face_frame, time_interleaved
from fer_bench.scenes import load_photo, multi_face_frame, photo_faces


def bench_inputs() -> dict[str, np.ndarray]:
    """One 170x150 face crop, 256 of them (one size: a crop-model batch shares H and W), a 640x480 frame
    with one face and a composed 1280x720 frame with eight."""
    from PIL import Image

    from fer_runtime import FaceDetector

    photo = load_photo("astronaut.jpg")
    (x, y, w, h), = [d.box for d in FaceDetector().detect(photo)]
    face = photo[int(y): int(y + h), int(x): int(x + w)]
    crop = np.asarray(Image.fromarray(face).resize((150, 170), Image.BILINEAR))
    rng = np.random.default_rng(0)
    batch = np.clip(crop[None].astype(np.int16) + rng.integers(-20, 21, (256, 1, 1, 3)), 0, 255).astype(np.uint8)
    widths = [40, 60, 80, 100, 120, 150, 180, 220]
    eight, _ = multi_face_frame(photo_faces(FaceDetector()), widths, np.random.default_rng(1))
    return {"crop": crop[None], "crops": batch, "frame_640x480": one_face_frame((480, 640), 150),
            "frame_1280x720": eight}


TASKS = (("predict_proba, batch 1 (170x150)", "crop"), ("predict_proba, batch 256 (170x150)", "crops"),
         ("detect, 640x480, one face", "frame_640x480"), ("detect, 1280x720, eight faces", "frame_1280x720"))


def portable_latency(models: Sequence[str], rounds: int, threads: int | None,
                     progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """p50/p90/p99 of the NumPy path and the portable graphs per model and task, with their largest
    probability difference on the timed inputs."""
    from fer_export.portable import build, read_sources, reference_faces
    from fer_runtime import EmotionRecognizer, FaceDetector
    from fer_runtime.portable import PortableCropModel, PortableFrameModel

    inputs = bench_inputs()
    rows = []
    for name in models:
        progress(f"portable vs NumPy: {name}")
        built = build(*read_sources(name))
        with tempfile.TemporaryDirectory() as tmp:
            paths = {kind: Path(tmp) / f"{kind}.onnx" for kind in built}
            for kind, model in built.items():
                paths[kind].write_bytes(model.SerializeToString())
            crop_model = PortableCropModel(paths["crop"], threads=threads)
            frame_model = PortableFrameModel(paths["frame"], threads=threads)
        recognizer = EmotionRecognizer(name, threads=threads, precision="named", detector=FaceDetector(threads=threads))
        for task, key in TASKS:
            x = inputs[key]
            if key.startswith("frame"):
                calls = {"numpy": lambda x=x, r=recognizer: r.detect(x),
                         "portable": lambda x=x, m=frame_model: m.detect(x)}
                ref = reference_faces(x, recognizer, recognizer.pipeline.detector).probabilities
                got = frame_model.detect(x)[1]
                diff = (float("inf") if got.shape != ref.shape else float(np.abs(got - ref).max()) if ref.size else 0.0)
            else:
                calls = {"numpy": lambda x=x, r=recognizer: r.predict_proba(x),
                         "portable": lambda x=x, m=crop_model: m.predict_proba(x)}
                diff = float(np.abs(crop_model.predict_proba(x) - recognizer.predict_proba(x)).max())
            times = time_interleaved(calls, rounds // 8 if key == "crops" else rounds, warmup=3)
            rows.append({"model": name, "task": task, "numpy": times["numpy"], "portable": times["portable"],
                         "max_probability_diff": diff})
    return {"threads": threads, "rounds": rounds, "rows": rows}


def portable_markdown(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}` (ONNX Runtime threads: {result['threads'] or 'one per core'}; "
             f"{result['rounds']} interleaved rounds, batch 256: an eighth as many)", "",
             "| model | call | NumPy path p50 (p90) | portable graph p50 (p90) | portable / NumPy | max \\|probability diff\\| |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        n, p = r["numpy"], r["portable"]
        lines.append(f"| {r['model']} | {r['task']} | {n['p50_ms']:.2f} ms ({n['p90_ms']:.2f}) | {p['p50_ms']:.2f} ms "
                     f"({p['p90_ms']:.2f}) | {p['p50_ms'] / n['p50_ms']:.2f} | {r['max_probability_diff']:.1e} |")
    return "\n".join(lines)
