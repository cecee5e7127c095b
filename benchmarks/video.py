"""Video end to end: frames/s split by stage, identity switches, decode speed, memory over a long run.

Clips are generated (fer_bench.clips: the test photos' faces moving, one leaving and coming back),
written as MPEG-4 with OpenCV, then read back through the runtime as a user's file would be.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fer_bench.clips import assign_tracks, default_movers, identity_switches, moving_faces, write_clip
from fer_runtime import EmotionRecognizer
from fer_runtime.analyzer import VideoAnalyzer
from fer_runtime.video import VideoSource, open_video
from fer_runtime.rows import CsvSink

STAGES = ("decode", "detect", "classify", "track", "write")


class _Clock:
    """Seconds spent per stage, by wrapping the calls that make each one."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0.0)

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[stage] += time.perf_counter() - start
        return timed

    def frames(self, video: VideoSource) -> Iterator[Any]:
        it = iter(video)
        while True:
            start = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                return
            finally:
                self.spent["decode"] += time.perf_counter() - start
            yield frame


class _Timed(VideoSource):
    """A source whose iteration is timed as decoding."""

    def __init__(self, video: VideoSource, clock: _Clock) -> None:
        super().__init__()
        self._video, self._clock = video, clock
        self.fps, self.frame_count, self.color_order, self.name = video.fps, video.frame_count, video.color_order, video.name

    def __iter__(self) -> Iterator[Any]:
        return self._clock.frames(self._video)


def make_clip(folder: Path, size: tuple[int, int], faces: int, seconds: float, fps: float = 30.0
              ) -> tuple[Path, list[list[tuple[int, tuple[float, float, float, float]]]]]:
    """A generated clip on disk and the true boxes of its frames."""
    truths: list[Any] = []
    frames = int(seconds * fps)

    def frames_only() -> Iterator[np.ndarray]:
        for frame, truth in moving_faces(size, default_movers(faces, size, seconds), fps, frames):
            truths.append(truth)
            yield frame

    path = folder / f"clip_{size[1]}x{size[0]}_{faces}faces.mp4"
    write_clip(path, frames_only(), fps)
    return path, truths


def run_clip(rec: EmotionRecognizer, path: Path, truths: list[Any], repeats: int = 2) -> dict[str, Any]:
    """Frames/s end to end over the clip (the best of ``repeats`` passes), per-stage ms per frame,
    and tracking scored against the truth."""
    best: dict[str, Any] | None = None
    for _ in range(repeats):
        clock = _Clock()
        pipeline = rec.pipeline
        detector_detect, classify = pipeline.detector.detect_array, pipeline.classify
        pipeline.detector.detect_array = clock.wrap("detect", detector_detect)  # type: ignore[method-assign]
        pipeline.classify = clock.wrap("classify", classify)  # type: ignore[method-assign]
        assigned = []
        try:
            with open(os.devnull, "w") as sink, open_video(path) as video:
                writer = CsvSink(sink, rec.labels, raw=True)
                write = clock.wrap("write", writer.write)
                analyzer = VideoAnalyzer(pipeline)
                start, n = time.perf_counter(), 0
                for (_, result), truth in zip(analyzer.follow(_Timed(video, clock)), truths):
                    write(result.to_rows(str(path)))
                    assigned.append(assign_tracks(truth, [f.box for f in result.faces], [f.track for f in result.faces]))
                    n += 1
                total = time.perf_counter() - start
        finally:
            del pipeline.detector.detect_array, pipeline.classify  # back to the class's methods
        clock.spent["track"] = total - sum(v for k, v in clock.spent.items() if k != "track")
        run = {"frames": n, "fps": n / total, "ms_per_frame": {k: 1000 * v / n for k, v in clock.spent.items()},
               "tracking": identity_switches(assigned),
               "faces_tracked": sum(len(a) for a in assigned), "faces_in_view": sum(len(t) for t in truths[:n])}
        if best is None or run["fps"] > best["fps"]:
            best = run
    assert best is not None
    return best


def decode_speed(path: Path, repeats: int = 3) -> dict[str, float]:
    """Frames/s decoding the clip to BGR arrays: OpenCV's VideoCapture, and PyAV when installed."""
    import cv2

    def opencv() -> int:
        cap, n = cv2.VideoCapture(str(path)), 0
        while cap.read()[0]:
            n += 1
        cap.release()
        return n

    def pyav() -> int:
        import av

        n = 0
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frame.to_ndarray(format="bgr24")
                n += 1
        return n

    readers: dict[str, Callable[[], int]] = {"opencv": opencv}
    try:
        import av  # noqa: F401

        readers["pyav"] = pyav
    except ImportError:
        pass
    out: dict[str, float] = {}
    for _ in range(repeats):  # interleaved
        for name, read in readers.items():
            start = time.perf_counter()
            n = read()
            out[name] = max(out.get(name, 0.0), n / (time.perf_counter() - start))
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def long_run(rec: EmotionRecognizer, frames: int, size: tuple[int, int] = (120, 160), every: int = 1000,
             progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """``frames`` generated frames (a face moving; a 300-frame cycle precomputed) through the analyzer
    and the CSV writer to /dev/null; RSS sampled every ``every`` frames."""
    every = max(1, min(every, frames // 2))  # a short run still gets two samples
    cycle = [f for f, _ in moving_faces(size, default_movers(1, size, 10.0), 30.0, 300)]

    def generate() -> Iterator[np.ndarray]:
        for i in range(frames):
            yield cycle[i % len(cycle)]

    samples, start = [], time.perf_counter()
    with open(os.devnull, "w") as sink:
        writer = CsvSink(sink, rec.labels, raw=True)
        for result in VideoAnalyzer(rec.pipeline).run(generate(), fps=30.0):
            writer.write(result.to_rows("generator"))
            if (result.index + 1) % every == 0:
                samples.append((result.index + 1, _rss_mb()))
                if (result.index + 1) % (every * 10) == 0:
                    progress(f"long run: {result.index + 1}/{frames} frames, RSS {samples[-1][1]:.1f} MB")
    rss = [mb for _, mb in samples]
    return {"frames": frames, "frame_size": list(size), "seconds": time.perf_counter() - start,
            "rss_mb_first_sample": rss[0], "rss_mb_last": rss[-1], "rss_mb_max": max(rss),
            "growth_mb": max(rss) - rss[0], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "samples": samples}


CASES = (((480, 640), 1), ((720, 1280), 4))


def video_benchmark(models: list[str], seconds: float = 10.0, long_frames: int = 100_000, threads: int | None = None,
                    progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every case of :data:`CASES` for every model, decode speed, and the long run."""
    result: dict[str, Any] = {"cases": [], "seconds_per_clip": seconds}
    recs = {m: EmotionRecognizer(m, threads=threads, precision="named") for m in models}
    with tempfile.TemporaryDirectory() as tmp:
        for size, faces in CASES:
            progress(f"clip {size[1]}x{size[0]}, {faces} face(s)")
            path, truths = make_clip(Path(tmp), size, faces, seconds)
            case = {"size": list(size), "faces": faces, "decode_fps": decode_speed(path), "models": {}}
            for name, rec in recs.items():
                progress(f"  {name}")
                case["models"][name] = run_clip(rec, path, truths)
            result["cases"].append(case)
    if long_frames:
        result["long_run"] = long_run(recs[models[0]], long_frames, progress=progress)
    return result


def video_markdown(result: dict[str, Any]) -> str:
    lines = ["End to end on generated clips (decode, detect every frame, track, classify, write CSV), best of 2 passes:", "",
             "| clip | model | frames/s | " + " | ".join(f"{s} ms" for s in STAGES)
             + " | identity switches | most ids per face | faces tracked |",
             "|---|---|---|" + "---|" * len(STAGES) + "---|---|---|"]
    for case in result["cases"]:
        clip = f"{case['size'][1]}x{case['size'][0]}, {case['faces']} face(s)"
        for name, run in case["models"].items():
            stages = " | ".join(f"{run['ms_per_frame'][s]:.2f}" for s in STAGES)
            lines.append(f"| {clip} | `{name}` | {run['fps']:.1f} | {stages} | {run['tracking']['switches']} | "
                         f"{run['tracking']['max_ids_per_face']} | {run['faces_tracked']}/{run['faces_in_view']} |")
    lines += ["", "Decoding alone, frames/s: " + "; ".join(
        f"{c['size'][1]}x{c['size'][0]}: " + ", ".join(f"{k} {v:.0f}" for k, v in c["decode_fps"].items())
        for c in result["cases"])]
    if "long_run" in result:
        lr = result["long_run"]
        lines += ["", f"Long run: {lr['frames']:,} generated {lr['frame_size'][1]}x{lr['frame_size'][0]} frames "
                      f"in {lr['seconds']:.0f} s; RSS {lr['rss_mb_first_sample']:.1f} MB after {lr['samples'][0][0]:,} frames, "
                      f"at most {lr['rss_mb_max']:.1f} MB, {lr['rss_mb_last']:.1f} MB at the end "
                      f"(growth {lr['growth_mb']:.1f} MB)."]
    return "\n".join(lines) + "\n"
