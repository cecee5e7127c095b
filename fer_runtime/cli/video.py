"""``fer-predict`` on videos, cameras and streams: rows per face and frame, written as they come.

Each frame's rows are written in one piece and flushed right away, so a process killed
mid-video leaves a file that parses up to its last frame. A frame with no face gets one ``no_face`` row; a source
that fails (cannot be opened, or stops early: truncated or damaged) ends with an ``error`` row
after the rows of every frame decoded before. ``--summary``, ``--plot`` and ``--annotate`` work
from what each frame gives, in constant memory per track.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_runtime.analyzer import VideoAnalyzer
from fer_runtime.annotate import annotate
from fer_runtime.errors import FerError, MissingExtraError
from fer_runtime.results import FrameResult
from fer_runtime.rows import RowSink, status_row
from fer_runtime.video import open_video

PLOTTED_TRACKS = 64  # series kept for --plot: the tracks seen longest (the plot shows the top 8)


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
            shown = face.reported  # smoothed
            stats.add(result.time_s, shown.label, [shown.probabilities[lab] for lab in self.labels])

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
    """Writes each frame with its faces drawn by :func:`~fer_runtime.annotate.annotate` (OpenCV's
    writer, mp4v), opened on the first frame; frames of another size are resized to the first's."""

    def __init__(self, path: Path, fps: float | None) -> None:
        self.path, self.fps, self._writer, self.frames = path, fps or 30.0, None, 0
        self._size = (0, 0)

    def write(self, image: np.ndarray, result: FrameResult, color_order: str) -> None:
        import cv2

        bgr = annotate(image, result.faces, color_order="bgr") if color_order == "bgr" else \
            np.ascontiguousarray(annotate(image, result.faces)[:, :, ::-1])
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (bgr.shape[1], bgr.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write a video there")
        elif bgr.shape[:2] != self._size[::-1]:  # a writer keeps its first size
            bgr = cv2.resize(bgr, self._size)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


# --- running one source ----------------------------------------------------------------------


@dataclass
class VideoJob:
    analyzer: VideoAnalyzer
    sink: RowSink
    timeline: Timeline | None = None
    progress: bool = True


def run_source(job: VideoJob, source: Any, name: str, live: bool,
               annotate_to: Path | None = None) -> dict[str, Any] | None:
    """Process one video, camera or URL, writing each frame's rows as it comes (and its annotated
    copy to ``annotate_to``); returns its error row, or None when it ran to its end."""
    from tqdm import tqdm

    annotated = AnnotatedVideo(annotate_to, None) if annotate_to else None
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
                    job.sink.write(result.to_rows(name))
                    if job.timeline is not None:
                        job.timeline.add(name, result)
                    bar.update()
    except MissingExtraError:
        raise
    except (FerError, OSError) as exc:
        error = status_row(name, "error", error=str(exc).removeprefix(f"{name}: "))
        job.sink.write([error])
    finally:
        if annotated is not None:
            annotated.close()
    return error
