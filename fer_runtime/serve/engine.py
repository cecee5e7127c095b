"""The work behind the endpoints: one recognizer per worker process, a bounded pool of jobs and a
bounded queue in front of it, per-request detector settings, and per-connection video analysis.

Framework-free: the app turns :class:`ServiceError` into HTTP answers. Requests' bytes are decoded
in memory and never written anywhere.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fer_runtime.analyzer import VideoAnalyzer
from fer_runtime.app import RecognizerOptions, make_recognizer
from fer_runtime.detector import FaceDetector
from fer_runtime.frames import load_frame
from fer_runtime.pipeline import FacePipeline
from fer_runtime.recognizer import EmotionRecognizer
from fer_runtime.results import Face, FrameResult, Prediction
from fer_runtime.serve.batching import MicroBatcher
from fer_runtime.serve.limits import ServeConfig, check_detector_setting, jobs_per_worker
from fer_runtime.serve.metrics import Metrics
from fer_runtime.video import VideoFrame, VideoSource

ORDER = "rgb"  # decoded images are RGB
MAX_DETECTORS = 32  # distinct per-request detector settings kept (each shares the one YuNet session)


class ServiceError(Exception):
    """An answer other than success: HTTP ``status``, a ``kind`` (the error body's ``type``), a
    message, and extra headers (``Retry-After``)."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


def build_recognizer(config: ServeConfig) -> EmotionRecognizer:
    """The worker's recognizer and detector, made by the commands' one helper."""
    return make_recognizer(RecognizerOptions(config.model, threads=config.threads, max_pixels=config.max_pixels,
                                             detector=dict(config.detector), models_dir=config.models_dir,
                                             precision=config.precision))


class Engine:
    """Admission (``jobs`` running + ``queue`` waiting, then 503), timeouts, and the inference calls."""

    def __init__(self, config: ServeConfig, metrics: Metrics, recognizer: EmotionRecognizer | None = None) -> None:
        self.config, self.metrics = config, metrics
        self.recognizer = recognizer or build_recognizer(config)
        base = self.recognizer.pipeline
        self._working, self._lock = 0, threading.Lock()
        self.batcher = MicroBatcher(self.recognizer, config.batch_size, config.batch_wait_ms, lambda: self._working,
                                    metrics.batch.observe) if config.batch_size > 1 else None
        self.pipeline = FacePipeline(self.batcher or _Observed(self.recognizer, metrics), base.detector, base.crop)
        self._detectors: dict[tuple, FaceDetector] = {}
        self.jobs = jobs_per_worker(config)
        self._pool: ThreadPoolExecutor | None = None
        self.admitted = 0  # requests running or queued
        self.streams = 0  # open WebSocket streams
        self.draining = True  # until open()

    def open(self) -> None:
        """Start taking work (the app's startup)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="fer-job")
        self.draining = False

    def close(self) -> None:
        """Refuse new work and wait for the jobs in progress (the app's shutdown); :meth:`open` starts again."""
        self.draining = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # --- admission -------------------------------------------------------------------------

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a job thread, if there is room; 503 when the queue is full, 504 past the timeout
        (the job still finishes and only then frees its place)."""
        if self.draining:
            raise ServiceError(503, "shutting_down", "the service is shutting down", {"Retry-After": "5"})
        if self.admitted >= self.jobs + self.config.queue:
            raise ServiceError(503, "busy", f"{self.admitted} requests are already queued; retry shortly",
                               {"Retry-After": "1"})
        self.admitted += 1
        self._gauges()
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._working_on, fn, args)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.config.request_timeout_s)
        except asyncio.TimeoutError:  # TimeoutError from 3.11 on
            raise ServiceError(504, "timeout", f"not done within {self.config.request_timeout_s:g} s") from None

    def _release(self, _: Any) -> None:
        self.admitted -= 1
        self._gauges()

    def _gauges(self) -> None:
        self.metrics.queue.set(max(0, self.admitted - self._working))
        self.metrics.running.set(self._working)

    def _working_on(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self._lock:
            self._working += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._working -= 1

    # --- inference (on job threads) ----------------------------------------------------------

    def detector_for(self, settings: dict[str, Any]) -> FaceDetector:
        """The default detector with ``settings`` changed; the YuNet session is shared, not made again."""
        base = self.pipeline.detector
        if not settings:
            return base
        for name, value in settings.items():
            check_detector_setting(name, value)
        key = tuple(sorted(settings.items()))
        if key not in self._detectors:
            if len(self._detectors) >= MAX_DETECTORS:
                self._detectors.pop(next(iter(self._detectors)))
            current = {n: getattr(base, n) for n in ("score_threshold", "nms_threshold", "min_face", "max_size")}
            self._detectors[key] = FaceDetector(session=base._session, color_order=base.color_order,
                                                max_pixels=base.max_pixels, **{**current, **settings})
        return self._detectors[key]

    def faces(self, data: bytes, settings: dict[str, Any], max_faces: int) -> tuple[tuple[int, int], list[Face]]:
        """The faces of one encoded image: its (height, width) and its faces, best detector score first."""
        image = load_frame(data, ORDER, self.config.max_pixels)
        found = self.detector_for(settings).detect_array(image, ORDER)[:max_faces]
        faces = self.pipeline.classify(image, found, ORDER)
        self.metrics.faces.observe(len(faces))
        return image.shape[:2], faces

    def crops(self, images: list[bytes]) -> list[Prediction]:
        """One prediction per encoded face crop, in one classifier call."""
        arrays = [load_frame(data, ORDER, self.config.max_pixels) for data in images]
        return self.pipeline.classifier.classify(arrays, ORDER)

    def stream(self) -> Stream:
        analyzer = VideoAnalyzer(self.pipeline, smoothing_s=self.config.smoothing_s, max_age_s=self.config.max_age_s)
        return Stream(analyzer)


class _Observed:
    """The recognizer as the pipeline's classifier, its batch sizes counted (batching off)."""

    def __init__(self, recognizer: EmotionRecognizer, metrics: Metrics) -> None:
        self.recognizer, self.metrics = recognizer, metrics

    def classify(self, crops: list[np.ndarray], color_order: Any) -> list[Prediction]:
        self.metrics.batch.observe(len(crops))
        return self.recognizer.classify(crops, color_order)


class Stream(VideoSource):
    """One WebSocket's frames as a live video source for :meth:`VideoAnalyzer.follow`: the connection
    hands in the newest frame (encoded bytes) and takes one result out, on a job thread; the tracker
    and smoother live in the analyzer's run, one per connection."""

    live = True
    color_order = ORDER
    name = "websocket"

    def __init__(self, analyzer: VideoAnalyzer) -> None:
        super().__init__()
        self._next: VideoFrame | None = None
        self._results = analyzer.follow(self)
        self._start = time.monotonic()
        self.received = 0

    def __iter__(self) -> Iterator[VideoFrame]:
        while self._next is not None:
            frame, self._next = self._next, None
            yield frame

    def arrived(self) -> tuple[int, float]:
        """Count a frame that came in: its index and its time since the connection opened."""
        self.received += 1
        return self.received - 1, time.monotonic() - self._start

    def step(self, index: int, time_s: float, data: bytes, max_pixels: int) -> FrameResult:
        """The result for one frame (called on a job thread, one frame at a time per connection). The
        frame is decoded first, so an unreadable one raises InputError and the run goes on."""
        self._next = VideoFrame(index, time_s, load_frame(data, ORDER, max_pixels))
        try:
            _, result = next(self._results)
        except StopIteration:
            raise ServiceError(500, "internal", "the stream's analysis stopped") from None
        return result
