"""The web benchmark: milliseconds per 640x480 frame (one face, four faces) in headless Chromium on 1 and 2
WASM threads, beside the Python runtime on the same frames, and the app's first load (time, bytes).

Python side: ``EmotionRecognizer(model).detect(frame)`` (the NumPy path) and the portable frame model the
app runs (``PortableFrameModel``), each on 1 and 2 ONNX Runtime threads, interleaved round by round. Browser
side: ``bench.mjs`` (the app's per-frame work: RGBA -> RGB, the frame model, tracking, rows). The two sides
run in alternating blocks so that drift on a shared machine falls on both.

    OPENBLAS_NUM_THREADS=1 python web/bench.py --rounds 40 -o benchmarks/results/web   (after npm run build)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

WEB = Path(__file__).resolve().parent
MODEL = "vgg-taper-int8"


def frames() -> dict[str, np.ndarray]:
    """640x480 frames: one face 150 px wide in the middle (as BENCHMARKS.md's detect rows), four faces
    70-120 px wide composed as its "Whole frames" are."""
    from fer_bench.detection import one_face_frame
    from fer_bench.scenes import multi_face_frame, photo_faces

    from fer_runtime import FaceDetector

    four, _ = multi_face_frame(photo_faces(FaceDetector()), [70, 90, 100, 120], np.random.default_rng(2),
                               frame_size=(480, 640))
    return {"640x480, one face": one_face_frame((480, 640), 150), "640x480, four faces": four}


def python_times(scenes: dict[str, np.ndarray], rounds: int) -> dict[str, dict[str, float]]:
    from fer_bench.detection import time_interleaved

    from fer_runtime import EmotionRecognizer
    from fer_runtime.portable import PortableFrameModel

    calls = {}
    for threads in (1, 2):
        rec = EmotionRecognizer(MODEL, threads=threads, precision="named")
        graph = PortableFrameModel(WEB / "models" / f"{MODEL}.frame.onnx", threads=threads)
        for name, frame in scenes.items():
            calls[f"python-numpy|{threads}|{name}"] = lambda r=rec, f=frame: r.detect(f)
            calls[f"python-graph|{threads}|{name}"] = lambda g=graph, f=frame: g.run(f)
    stats = time_interleaved(calls, rounds, warmup=5)
    faces = {name: len(EmotionRecognizer(MODEL, precision="named").detect(frame)) for name, frame in scenes.items()}
    return {"stats": stats, "faces": faces}  # type: ignore[dict-item]


def browser_times(scenes: dict[str, np.ndarray], rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        listing = []
        for i, (name, frame) in enumerate(scenes.items()):
            (Path(tmp) / f"frame{i}.rgb").write_bytes(np.ascontiguousarray(frame).tobytes())
            listing.append({"name": name, "file": f"frame{i}.rgb", "height": frame.shape[0], "width": frame.shape[1]})
        (Path(tmp) / "frames.json").write_text(json.dumps(listing))
        done = subprocess.run([shutil.which("node") or "node", "bench.mjs", tmp, str(rounds)], cwd=WEB,
                              capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds per block and side (default 40)")
    parser.add_argument("--blocks", type=int, default=2, help="alternating Python / browser blocks (default 2)")
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/web"))
    args = parser.parse_args()
    from fer_bench.env import describe, environment

    scenes = frames()
    load_before = os.getloadavg()[0]
    python: dict[str, list[float]] = {}
    browser: dict[str, list[float]] = {}
    loads, meta, faces = [], {}, {}
    for _ in range(args.blocks):
        py = python_times(scenes, args.rounds)
        faces.update(py["faces"])
        for key, stat in py["stats"].items():
            python.setdefault(key, []).append(stat["p50_ms"])  # per-block medians
        web = browser_times(scenes, args.rounds)
        loads += web["loads"]
        meta = {"onnxruntime_web": web["onnxruntime_web"], "chromium": web["chromium"]}
        for threads, result in web["timing"].items():
            for name, times in result["times"].items():
                browser.setdefault(f"chromium-wasm|{threads}|{name}", []).extend(times)
                faces[f"chromium|{name}"] = result["faces"][name]
    table = []
    for name in scenes:
        for threads in (1, 2):
            web_ms = browser[f"chromium-wasm|{threads}|{name}"]
            table.append({"frame": name, "threads": threads,
                          "chromium_p50_ms": percentile(web_ms, 50), "chromium_p90_ms": percentile(web_ms, 90),
                          "python_numpy_p50_ms": float(np.median(python[f"python-numpy|{threads}|{name}"])),
                          "python_graph_p50_ms": float(np.median(python[f"python-graph|{threads}|{name}"]))})
    env = environment()
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result = {"environment": env, "model": MODEL, **meta, "rounds": args.rounds, "blocks": args.blocks,
              "load_average_1min_before_after": load,
              "faces_found": faces, "table": table, "first_load": loads}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "bench.json").write_text(json.dumps(result, indent=1))
    lines = [(f"{describe(env)}; Chromium {meta['chromium']}, onnxruntime-web {meta['onnxruntime_web']}, {MODEL}; "
              f"load average {load[0]} before, {load[1]} after"), "",
             "| frame | threads | Chromium WASM p50 (p90) | frames/s at p50 | Python NumPy path p50 | Python, portable graph p50 |",
             "|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['frame']} | {row['threads']} | {row['chromium_p50_ms']:.1f} ms ({row['chromium_p90_ms']:.1f}) | "
                     f"{1000 / row['chromium_p50_ms']:.0f} | {row['python_numpy_p50_ms']:.1f} ms | {row['python_graph_p50_ms']:.1f} ms |")
    ms = sorted(x["ms"] for x in loads)
    mb = sorted(x["bytes"] / 1e6 for x in loads)
    lines += ["", f"First load ({len(loads)} fresh browsers, empty cache, loopback): median {ms[len(ms) // 2]} ms "
              f"(range {ms[0]}-{ms[-1]}), {mb[len(mb) // 2]:.2f} MB in {loads[0]['requests']} requests, "
              f"{sum(x['foreign'] for x in loads)} requests elsewhere; largest: "
              + ", ".join(f"{x['path']} {x['bytes'] / 1e6:.2f} MB" for x in loads[0]["largest"])]
    (args.output / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
