"""Video files, cameras, streams and frame iterables as one iterator of frames.

Files, camera indices and URLs are decoded by OpenCV's ``VideoCapture`` (FFmpeg inside the
opencv-python-headless 4.x wheel; ``pip install 'fer-edge[video]'``): one library that opens
camera indices the same way on Linux, macOS and Windows, writes the annotated video, and is
already one of the project's named packages. Iterables of arrays need nothing beyond NumPy.

Nothing accumulates: frames are read one at a time, and a live source (camera or URL) can keep
only the newest frame when processing falls behind (``drop_to_latest``), counting what it skips.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Union

import numpy as np

from fer_runtime.errors import InputError, MissingExtraError
from fer_runtime.preprocessing import ColorOrder

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
DEFAULT_FPS = 30.0  # the frame rate assumed for iterables of frames (and sources that report none)

VideoSourceLike = Union[str, "os.PathLike[str]", int, Iterable[Any]]
"""A video file path, a camera index, a stream URL, or an iterable of frames (uint8 arrays)."""


class VideoError(InputError):
    """A video source that cannot be opened, or that stops before its end (truncated or damaged)."""


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its ``index`` in the source (counting dropped frames), its time in
    seconds (the container's timestamp when it has one, else index / fps) and the pixels."""

    index: int
    time_s: float
    image: np.ndarray


def is_video_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_url(source: object) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def is_live_url(url: str) -> bool:
    """A stream (rtsp://, udp://... or an http(s) URL without a video file's suffix), as opposed to
    a video file served over HTTP, which is read like a local file (every frame, container times)."""
    if url.lower().startswith(("http://", "https://")):
        return not is_video_path(url.split("?", 1)[0].split("#", 1)[0])
    return True


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise MissingExtraError("reading video, cameras or streams needs OpenCV: pip install 'fer-edge[video]'") from exc
    return cv2


class VideoSource:
    """Frames from one source, as an iterator of :class:`VideoFrame`; use it as a context manager.

    ``fps``: the source's frame rate (``None`` when it reports none). ``frame_count``: the
    number of frames the container declares (``None`` for live sources or when unknown).
    ``color_order``: channel order of the frames. ``dropped``: frames skipped so far because
    processing fell behind a live source (always 0 for files and iterables).
    """

    fps: float | None = None
    frame_count: int | None = None
    color_order: ColorOrder = "bgr"
    live: bool = False
    name: str = ""

    def __init__(self) -> None:
        self.dropped = 0

    def __iter__(self) -> Iterator[VideoFrame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder or camera (idempotent)."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameIterable(VideoSource):
    """An iterable of frames (uint8 arrays, or :class:`VideoFrame` objects, which keep their times)."""

    def __init__(self, frames: Iterable[Any], fps: float = DEFAULT_FPS, color_order: ColorOrder = "rgb") -> None:
        super().__init__()
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < math.inf:
            raise InputError(f"fps must be a positive number, got {fps!r}")
        self._frames, self.fps, self.color_order, self.name = frames, float(fps), color_order, "frames"
        self.frame_count = len(frames) if hasattr(frames, "__len__") else None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[VideoFrame]:
        for i, item in enumerate(self._frames):
            if isinstance(item, VideoFrame):
                yield item
            elif isinstance(item, np.ndarray):
                yield VideoFrame(i, i / self.fps, item)  # type: ignore[operator]
            else:
                raise InputError(f"frame {i} of the iterable is a {type(item).__name__}; expected a NumPy image array")


class CaptureSource(VideoSource):
    """A file, camera or URL opened with ``cv2.VideoCapture``.

    A file that stops decoding before the frame count its container declares raises
    :class:`VideoError` after its last good frame. Live sources are timed by the clock (seconds
    since opening) unless they report timestamps; with ``drop_to_latest`` a reader thread keeps
    only the newest frame, so a slow consumer always gets the present, and ``dropped`` counts the rest.
    """

    def __init__(self, target: str | int, *, live: bool, drop_to_latest: bool, start: int = 0,
                 stop: int | None = None) -> None:
        super().__init__()
        cv2 = _cv2()
        self.live, self.name = live, f"camera {target}" if isinstance(target, int) else str(target)
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            what = "no camera with that index, or it is busy" if isinstance(target, int) else (
                "it cannot be reached or is not a video" if is_url(target) else "not a readable video")
            raise VideoError(f"{self.name}: cannot open ({what})")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
        self.frame_count = count if count > 0 else None
        self._drop = drop_to_latest and live
        self._msec = cv2.CAP_PROP_POS_MSEC
        self._lock, self._stop = threading.Lock(), threading.Event()
        self.start, self.stop = start, stop
        if start > 0 and not (self._cap.set(cv2.CAP_PROP_POS_FRAMES, start)
                              and int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == start):
            self._cap.release()
            raise VideoError(f"{self.name}: cannot seek to frame {start} (of {self.frame_count or 'unknown'})")

    def close(self) -> None:
        self._stop.set()  # a reader thread (drop_to_latest) ends after its current read
        with self._lock:
            self._cap.release()

    def _read(self) -> tuple[bool, Any, float]:
        with self._lock:
            ok, image = self._cap.read()
            stamp = self._cap.get(self._msec) / 1000.0 if ok else 0.0
        return ok, image, stamp

    def __iter__(self) -> Iterator[VideoFrame]:
        return self._latest() if self._drop else self._sequential()

    def _sequential(self) -> Iterator[VideoFrame]:
        start, index, last = time.monotonic(), self.start, -math.inf
        end = self.stop if self.stop is not None else math.inf
        while index < end:
            ok, image, stamp = self._read()
            if not ok:
                break
            last = self._time(stamp, last, start)
            yield VideoFrame(index, last, image)
            index += 1
        if self.frame_count is not None and index < min(end, self.frame_count) - 1:  # counts may be rounded by one
            raise VideoError(f"{self.name}: decoding stopped at frame {index} of {self.frame_count}: "
                             "the file is truncated or damaged (every frame before it was processed)")

    def _time(self, stamp: float, last: float, start: float) -> float:
        """Live: seconds since opening. Files: the container's timestamp, or one frame after the
        last when it gives none that increases."""
        if self.live:
            return time.monotonic() - start
        if stamp > last:
            return stamp
        step = 1.0 / (self.fps or DEFAULT_FPS)
        return self.start * step if last == -math.inf else last + step

    def _latest(self) -> Iterator[VideoFrame]:
        slot: list[VideoFrame] = []
        ready = threading.Condition()
        state: dict[str, Any] = {"ended": False, "error": None}
        start = time.monotonic()

        def reader() -> None:
            index = 0
            try:
                while not self._stop.is_set():
                    ok, image, _ = self._read()
                    if not ok:
                        break
                    with ready:
                        if slot:
                            self.dropped += 1
                            slot.clear()
                        slot.append(VideoFrame(index, time.monotonic() - start, image))
                        ready.notify()
                    index += 1
            except Exception as exc:  # handed to the consumer, which raises it
                state["error"] = exc
            finally:
                with ready:
                    state["ended"] = True
                    ready.notify()

        thread = threading.Thread(target=reader, name=f"fer-video-reader {self.name}", daemon=True)
        thread.start()
        try:
            while True:
                with ready:
                    while not slot and not state["ended"]:
                        ready.wait()
                    if not slot:
                        break
                    frame = slot.pop()
                yield frame
            if state["error"] is not None:
                raise VideoError(f"{self.name}: reading stopped ({state['error']})") from state["error"]
        finally:
            self._stop.set()
            thread.join(timeout=5)


def open_range(path: str | os.PathLike[str], start: int, stop: int) -> CaptureSource:
    """Frames ``start`` to ``stop`` (excluded) of a video file, with the indices and times they have in
    the whole file: one piece of a long video, for spreading it over workers."""
    if not 0 <= start < stop:
        raise InputError(f"a frame range needs 0 <= start < stop, got {start}, {stop}")
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such file")
    return CaptureSource(str(path), live=False, drop_to_latest=False, start=start, stop=stop)


def frame_count(path: str | os.PathLike[str]) -> int | None:
    """The number of frames a video file's container declares (None when it declares none)."""
    with open_video(path) as video:
        return video.frame_count


def open_video(
    source: VideoSourceLike, *, fps: float = DEFAULT_FPS, color_order: ColorOrder = "rgb",
    drop_to_latest: bool | None = None,
) -> VideoSource:
    """A :class:`VideoSource` for a file path, a camera index (int), a URL (rtsp://, http://...) or
    an iterable of frames.

    ``fps`` and ``color_order`` apply to iterables only (decoded video is BGR, timed by its
    container). ``drop_to_latest``: for live sources (cameras, URLs), keep only the newest frame
    when processing falls behind (default: on for live sources; files and iterables never drop).
    Raises :class:`VideoError` when the source cannot be opened and
    :class:`~fer_runtime.errors.MissingExtraError` without OpenCV for files, cameras and URLs.
    """
    if isinstance(source, bool):
        raise InputError("a video source must be a path, a camera index, a URL or an iterable of frames, not a bool")
    if isinstance(source, int):
        return CaptureSource(source, live=True, drop_to_latest=drop_to_latest is not False)
    if is_url(source):
        live = is_live_url(str(source))
        return CaptureSource(str(source), live=live, drop_to_latest=live and drop_to_latest is not False)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise VideoError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        return CaptureSource(str(path), live=False, drop_to_latest=False)
    if isinstance(source, np.ndarray) and source.ndim in (2, 3):
        raise InputError("one image is not a video: pass an iterable of frames (a list, or an (N, H, W[, C]) array)")
    if isinstance(source, Iterable):
        return FrameIterable(source, fps=fps, color_order=color_order)
    raise InputError(f"cannot read video from a {type(source).__name__}: expected a path, a camera index, "
                     "a URL or an iterable of frames")
