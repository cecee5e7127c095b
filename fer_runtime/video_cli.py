"""``fer-predict`` on videos, cameras and streams: rows per face and frame, written as they come.

Each frame's rows are written in one piece and flushed right away, so a process killed
mid-video leaves a file that parses up to its last frame. A frame with no face gets one ``no_face`` row; a source
that fails (cannot be opened, or stops early: truncated or damaged) ends with an ``error`` row
after the rows of every frame decoded before. ``--summary``, ``--plot`` and ``--annotate`` work
from what each frame gives, in constant memory per track.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fer_runtime.analyzer import FrameResult, VideoAnalyzer
from fer_runtime.errors import FerError, MissingExtraError
from fer_runtime.video import open_video

BOX_COLOR_BGR = (0, 255, 0)
PLOTTED_TRACKS = 64  # series kept for --plot: the tracks seen longest (the plot shows the top 8)


def video_columns(labels: tuple[str, ...]) -> list[str]:
    """The row keys, in order: smoothed probabilities ``p_<label>``, raw ones ``raw_p_<label>``."""
    return ["source", "frame", "time_s", "status", "track", "x", "y", "w", "h", "score", "label",
            *(f"p_{lab}" for lab in labels), *(f"raw_p_{lab}" for lab in labels), "error"]


def frame_rows(source: str, result: FrameResult, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per face of the frame, or one ``no_face`` row."""
    base = {"source": source, "frame": result.index, "time_s": round(result.time_s, 4)}
    if not result.faces:
        return [{**base, "status": "no_face"}]
    rows = []
    for face in result.faces:
        row = {**base, "status": "ok", "track": face.track, **dict(zip("xywh", face.box)),
               "score": round(face.score, 4), "label": face.label}
        row.update({f"p_{lab}": round(face.probabilities[lab], 4) for lab in labels})
        row.update({f"raw_p_{lab}": round(face.raw.probabilities[lab], 4) for lab in labels})
        rows.append(row)
    return rows


class VideoRowWriter:
    """Rows as CSV (a header, then the columns of :func:`video_columns`), JSON Lines or a table;
    each call to :meth:`write` is one write of whole lines."""

    def __init__(self, stream: TextIO, labels: tuple[str, ...], fmt: str) -> None:
        self.stream, self.labels, self.fmt, self.columns = stream, labels, fmt, video_columns(labels)

    def start(self) -> None:
        if self.fmt == "csv":
            self._emit([dict(zip(self.columns, self.columns))])
        elif self.fmt == "table":
            probs = " ".join(f"{lab[:7]:>7s}" for lab in self.labels)
            self.stream.write(f"{'frame':>6s} {'time_s':>8s} {'track':>5s} {'box x,y,w,h':>19s} "
                              f"{'label':9s} {probs}  source\n")
            self.stream.flush()

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._emit(rows)

    def _emit(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        if self.fmt == "csv":
            out = csv.writer(buf, lineterminator="\n")
            for row in rows:
                out.writerow([row.get(c) for c in self.columns])
        elif self.fmt == "json":
            for row in rows:
                buf.write(json.dumps({c: row.get(c) for c in self.columns}) + "\n")
        else:
            for row in rows:
                buf.write(self._table_line(row))
        self.stream.write(buf.getvalue())  # one write and one flush per frame: whole lines reach the file
        self.stream.flush()

    def _table_line(self, row: dict[str, Any]) -> str:
        where = f"{row['frame'] if row.get('frame') is not None else '-':>6} {row.get('time_s') or 0:8.3f}"
        if row["status"] != "ok":
            what = "no face" if row["status"] == "no_face" else f"error: {row.get('error')}"
            return f"{where} {'-':>5s} {'':>19s} {what}  {row['source']}\n"
        box = ",".join(str(row[k]) for k in "xywh")
        probs = " ".join(f"{row[f'p_{lab}']:7.3f}" for lab in self.labels)
        return f"{where} {row['track']:5d} {box:>19s} {row['label']:9s} {probs}  {row['source']}\n"

    def flush(self) -> None:
        self.stream.flush()


# --- what is kept per track: the summary and the plot ----------------------------------------


@dataclass
class TrackStats:
    """One track's frames, time span, label counts (smoothed labels) and a bounded series of its
    smoothed probabilities for plotting (halved in resolution whenever it reaches ``max_points``)."""

    first_s: float
    last_s: float = 0.0
    frames: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    probs: list[list[float]] = field(default_factory=list)
    stride: int = 1
    max_points: int = 2000
    series: bool = True  # whether the probabilities over time are kept (for --plot)

    def add(self, time_s: float, label: str, probs: list[float]) -> None:
        if self.series and self.frames % self.stride == 0:
            self.times.append(time_s)
            self.probs.append(probs)
            if len(self.times) >= self.max_points:
                self.times, self.probs, self.stride = self.times[::2], self.probs[::2], self.stride * 2
        self.frames += 1
        self.last_s = time_s
        self.counts[label] = self.counts.get(label, 0) + 1


class Timeline:
    """Per source and track: :class:`TrackStats`, fed one frame at a time. With ``series`` (for
    --plot) the probabilities over time are kept for the :data:`PLOTTED_TRACKS` tracks seen longest,
    at most 2,000 points each; otherwise only counts, a few numbers per track."""

    def __init__(self, labels: tuple[str, ...], series: bool = False) -> None:
        self.labels, self.series = labels, series
        self.tracks: dict[tuple[str, int], TrackStats] = {}
        self._with_series: set[tuple[str, int]] = set()

    def add(self, source: str, result: FrameResult) -> None:
        for face in result.faces:
            key = (source, face.track)
            stats = self.tracks.get(key)
            if stats is None:
                stats = self.tracks[key] = TrackStats(result.time_s, series=self.series)
                if self.series:
                    self._with_series.add(key)
                    self._bound_series()
            stats.add(result.time_s, face.label, [face.probabilities[lab] for lab in self.labels])

    def _bound_series(self) -> None:
        if len(self._with_series) > PLOTTED_TRACKS:
            shortest = min(self._with_series, key=lambda k: self.tracks[k].frames)
            self._with_series.discard(shortest)
            stats = self.tracks[shortest]
            stats.series, stats.times, stats.probs = False, [], []

    def summary(self) -> str:
        """A table: per track, frames seen, time span, dominant emotion and the share of each."""
        if not self.tracks:
            return "no faces were found"
        head = f"{'track':>5s} {'frames':>7s} {'from_s':>8s} {'to_s':>8s}  {'dominant':9s} " + " ".join(
            f"{lab[:7]:>7s}" for lab in self.labels)
        lines, multi = [head], len({s for s, _ in self.tracks}) > 1
        for (source, track), st in self.tracks.items():
            dominant = max(st.counts, key=lambda k: st.counts[k])
            shares = " ".join(f"{100 * st.counts.get(lab, 0) / st.frames:6.1f}%" for lab in self.labels)
            lines.append(f"{track:5d} {st.frames:7d} {st.first_s:8.2f} {st.last_s:8.2f}  {dominant:9s} {shares}"
                         + (f"  {source}" if multi else ""))
        return "\n".join(lines)

    def plot(self, out: Path, max_tracks: int = 8) -> None:
        """One panel per track (the ``max_tracks`` seen longest), its smoothed probabilities
        stacked over time in seconds; written as PNG."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise MissingExtraError("--plot needs matplotlib: pip install 'fer-edge[plot]'") from exc
        chosen = sorted(((k, v) for k, v in self.tracks.items() if v.times), key=lambda kv: -kv[1].frames)[:max_tracks]
        fig, axes = plt.subplots(max(1, len(chosen)), 1, figsize=(10, 1.9 * max(1, len(chosen)) + 0.8),
                                 sharex=True, squeeze=False)
        colors = plt.get_cmap("tab10").colors
        for ax, ((source, track), st) in zip(axes[:, 0], chosen):
            series = np.asarray(st.probs).T
            ax.stackplot(st.times, series, colors=colors[: len(self.labels)], labels=self.labels, linewidth=0)
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"track {track}")
        if chosen:  # one time axis for all panels: where each track starts and ends shows
            t0 = min(st.times[0] for _, st in chosen)
            axes[0, 0].set_xlim(t0, max(max(st.last_s for _, st in chosen), t0 + 1e-3))
        else:
            axes[0, 0].text(0.5, 0.5, "no faces were found", ha="center", va="center")
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle("Expression probabilities per face over time (smoothed)", y=0.99, fontsize=11)
        handles, names = axes[0, 0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=len(names), frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)


# --- the annotated video ---------------------------------------------------------------------


class AnnotatedVideo:
    """Writes each frame with its boxes, track ids and labels drawn (OpenCV, mp4v), opened on the first frame."""

    def __init__(self, path: Path, fps: float | None) -> None:
        self.path, self.fps, self._writer, self.frames = path, fps or 30.0, None, 0
        self._size = (0, 0)

    def write(self, image: np.ndarray, result: FrameResult, color_order: str) -> None:
        import cv2

        if image.ndim == 2 or image.shape[2] <= 2:
            bgr = cv2.cvtColor(np.ascontiguousarray(image if image.ndim == 2 else image[:, :, 0]), cv2.COLOR_GRAY2BGR)
        else:
            bgr = np.ascontiguousarray(image[:, :, :3] if color_order == "bgr" else image[:, :, 2::-1])
        if self._writer is not None and bgr.shape[:2] != self._size[::-1]:  # a writer keeps its first size
            scale = (self._size[0] / bgr.shape[1], self._size[1] / bgr.shape[0])
            bgr = cv2.resize(bgr, self._size)
            result = _scaled(result, scale)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (bgr.shape[1], bgr.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write a video there")
        thick = max(1, round(max(bgr.shape[:2]) / 400))
        scale = max(0.4, max(bgr.shape[:2]) / 1400)
        for face in result.faces:
            x, y, w, h = face.box
            cv2.rectangle(bgr, (x, y), (x + w - 1, y + h - 1), BOX_COLOR_BGR, thick)
            text = f"#{face.track} {face.label} {face.probabilities[face.label]:.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            top = y - th - base - 4 if y >= th + base + 4 else y
            cv2.rectangle(bgr, (x, top), (x + tw + 4, top + th + base + 4), BOX_COLOR_BGR, -1)
            cv2.putText(bgr, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def _scaled(result: FrameResult, scale: tuple[float, float]) -> FrameResult:
    """The result with its boxes scaled by (sx, sy), for a frame drawn at another size."""
    from dataclasses import replace

    faces = tuple(replace(f, box=(round(f.box[0] * scale[0]), round(f.box[1] * scale[1]),
                                  round(f.box[2] * scale[0]), round(f.box[3] * scale[1]))) for f in result.faces)
    return replace(result, faces=faces)


# --- running one source ----------------------------------------------------------------------


@dataclass
class VideoJob:
    analyzer: VideoAnalyzer
    writer: VideoRowWriter
    labels: tuple[str, ...]
    timeline: Timeline | None = None
    annotate_to: Path | None = None
    progress: bool = True


def run_source(job: VideoJob, source: Any, name: str, live: bool) -> dict[str, Any] | None:
    """Process one video, camera or URL; returns its error row, or None when it ran to its end."""
    from tqdm import tqdm

    annotated = AnnotatedVideo(job.annotate_to, None) if job.annotate_to else None
    error = None
    try:
        with open_video(source) as video:
            if annotated is not None:
                annotated.fps = video.fps or 30.0
            total = video.frame_count
            with tqdm(total=total, unit="frame", file=sys.stderr, disable=None if job.progress else True,
                      desc=Path(name).name if not live else name) as bar:
                for frame, result in job.analyzer.follow(video):
                    if annotated is not None:
                        annotated.write(frame.image, result, video.color_order)
                    job.writer.write(frame_rows(name, result, job.labels))
                    if job.timeline is not None:
                        job.timeline.add(name, result)
                    bar.update()
    except MissingExtraError:
        raise
    except (FerError, OSError) as exc:
        error = {"source": name, "status": "error", "error": str(exc).removeprefix(f"{name}: ")}
        job.writer.write([error])
    finally:
        if annotated is not None:
            annotated.close()
        job.writer.flush()
    return error
