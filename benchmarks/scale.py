"""fer-batch on Ray Data against the single-process fer-predict, on the same generated files.

Images: 640x480 JPEGs with one face (frames of a generated clip); video: one generated 640x480
clip. Ray is started once (its start-up is not counted); each setting's time includes starting
its actors and loading the models there, and writing Parquet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from fer_bench.clips import default_movers, moving_faces, write_clip

SETTINGS = ((1, 1), (1, 2), (2, 1))  # (workers, threads per worker)


def make_inputs(folder: Path, images: int, video_frames: int) -> tuple[list[str], str]:
    size = (480, 640)
    paths = []
    for i, (frame, _) in enumerate(moving_faces(size, default_movers(1, size, 20.0), 30.0, images)):
        path = folder / "images" / f"img{i:04d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(frame).save(path, quality=90)
        paths.append(str(path))
    clip = folder / "clip.mp4"
    write_clip(clip, (f for f, _ in moving_faces(size, default_movers(1, size, 20.0), 30.0, video_frames)), 30.0)
    return paths, str(clip)


def _cli_seconds(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fer_runtime", *args, "--model", "vgg-taper-int8", "--csv", "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    return time.perf_counter() - start


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def scale_benchmark(images: int = 2000, video_frames: int = 1800, range_frames: int = 150,
                    progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import ray

    from fer_runtime.batch import BatchPredictor
    from fer_runtime.scale import run

    result: dict[str, Any] = {"images": images, "video_frames": video_frames, "range_frames": range_frames,
                              "cpus": os.cpu_count(), "settings": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths, clip = make_inputs(folder, images, video_frames)
        progress("single-process fer-predict")
        result["cli"] = {"images_s": _cli_seconds([str(folder / "images")]), "video_s": _cli_seconds([clip])}
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for workers, threads in SETTINGS:
                progress(f"Ray Data: {workers} worker(s) x {threads} thread(s)")
                row: dict[str, Any] = {"workers": workers, "threads_per_worker": threads}
                for kind, inputs in (("few", paths[:8]), ("images", paths), ("video", [clip])):
                    out = folder / f"out-{kind}-{workers}x{threads}"
                    start = time.perf_counter()
                    run(inputs, str(out), workers=workers, threads_per_worker=threads, range_frames=range_frames,
                        predictor=BatchPredictor("vgg-taper-int8", threads=threads))
                    row[f"{kind}_s"] = time.perf_counter() - start
                    rows = pq.read_table(out).num_rows
                    row[f"{kind}_rows"], row[f"{kind}_bytes"] = rows, _bytes(out)
                result["settings"].append(row)
        finally:
            ray.shutdown()
    return result


def scale_markdown(result: dict[str, Any]) -> str:
    n, f = result["images"], result["video_frames"]
    cli = result["cli"]
    lines = [f"{n} 640x480 JPEGs (one face each) and one 640x480 clip of {f} frames (ranges of "
             f"{result['range_frames']} frames), `vgg-taper-int8`; Ray started once beforehand, each time includes "
             "starting the actors, loading the models and writing Parquet.", "",
             "| run | images/s | vs fer-predict | video frames/s | vs fer-predict | 8 images (start-up), s |",
             "|---|---|---|---|---|---|",
             f"| fer-predict (one process, 2 threads) | {n / cli['images_s']:.1f} | 1.00 | "
             f"{f / cli['video_s']:.1f} | 1.00 | |"]
    for s in result["settings"]:
        lines.append(f"| fer-batch, {s['workers']} worker(s) x {s['threads_per_worker']} thread(s) | "
                     f"{n / s['images_s']:.1f} | {cli['images_s'] / s['images_s']:.2f} | "
                     f"{f / s['video_s']:.1f} | {cli['video_s'] / s['video_s']:.2f} | {s['few_s']:.1f} |")
    last = result["settings"][-1]
    lines += ["", f"Parquet output: {last['images_bytes'] / max(1, last['images_rows']):.0f} bytes a row for images, "
                  f"{last['video_bytes'] / max(1, last['video_rows']):.0f} for video (compressed, this small run)."]
    return "\n".join(lines) + "\n"
