"""BatchPredictor: the runtime as the per-worker model of a data engine (Ray Data, Spark).

A ``BatchPredictor`` holds only its settings; its ONNX Runtime sessions are made on the first
batch in each worker process (and left out when it is pickled), with as many threads as the
worker's CPU share. A batch is a dict of columns (``dict[str, np.ndarray]``, what Ray Data's
``map_batches`` passes with ``batch_format="numpy"``):

* images: ``id`` (optional) and one of ``bytes`` (encoded image files), ``path`` (files or URIs
  the worker can read) or ``image`` (decoded arrays);
* video: ``path``, ``start`` and ``stop``: a frame range of a file (see :func:`split_video`).

It returns the columns of :data:`COLUMNS`: one row per face found (per image with ``crops=True``),
a ``no_face`` row for an image or frame without one, and an ``error`` row with the reason for an
input that cannot be read; a bad input never fails the batch. Nothing here imports Ray.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from fer_runtime.errors import InputError
from fer_runtime.images import DEFAULT_MAX_PIXELS
from fer_runtime.labels import LABELS

PROB_COLUMNS = tuple(f"p_{label}" for label in LABELS)
COLUMNS = ("id", "frame", "time_s", "face", "track", "status", "x", "y", "w", "h", "detector_score", "label",
           "score", *PROB_COLUMNS, "error")
"""Output columns, in order. For images ``frame`` and ``track`` are -1 and ``time_s`` NaN; ``face``
numbers the faces of one image or frame from 0 (-1 on ``no_face`` and ``error`` rows)."""

_INT = ("frame", "face", "track", "x", "y", "w", "h")
_FLOAT = ("time_s", "detector_score", "score", *PROB_COLUMNS)
TRACKS_PER_RANGE = 1_000_000
"""Video track ids restart in each frame range; a row's ``track`` is start frame x this + the id in the range."""


def worker_threads() -> int:
    """ONNX Runtime threads for this worker: the CPUs Ray assigned it (when running in Ray; Ray is
    never imported here), else the CPUs this process may use."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except AssertionError:  # Ray's answer on the driver: not a worker, no assigned share
            cpus = None
        if cpus:
            return max(1, math.floor(cpus))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def blank_row(source_id: str, status: str, **values: Any) -> dict[str, Any]:
    """A row with every column: -1 for integers, NaN for floats, None for strings, then ``values``."""
    row: dict[str, Any] = dict.fromkeys(_INT, -1)
    row.update(dict.fromkeys(_FLOAT, math.nan))
    row.update({"id": source_id, "status": status, "label": None, "error": None})
    row.update(values)
    return row


def face_row(source_id: str, face: int, box: Any, detector_score: float, label: str,
             probabilities: dict[str, float], **values: Any) -> dict[str, Any]:
    """An ``ok`` row for one face."""
    return blank_row(source_id, "ok", face=face, detector_score=float(detector_score), label=label,
                     score=float(probabilities[label]), **dict(zip("xywh", map(int, box))),
                     **{f"p_{k}": float(v) for k, v in probabilities.items()}, **values)


def to_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows -> the columns of :data:`COLUMNS`, with fixed dtypes (int64, float64, object for strings)."""
    def column(name: str) -> np.ndarray:
        dtype = np.int64 if name in _INT else np.float64 if name in _FLOAT else object
        out = np.empty(len(rows), dtype)
        out[:] = [r[name] for r in rows]
        return out

    return {name: column(name) for name in COLUMNS}


def to_arrow(columns: dict[str, np.ndarray]) -> Any:
    """The columns as a ``pyarrow.Table`` with a fixed schema (int64, float64, string), so that
    batches whose text columns happen to be all empty still concatenate with the others."""
    import pyarrow as pa

    def kind(name: str) -> Any:
        return pa.int64() if name in _INT else pa.float64() if name in _FLOAT else pa.string()

    # from_pandas: NaN becomes null, as Spark's pandas-to-Arrow conversion writes it.
    return pa.table({name: pa.array(columns[name], type=kind(name), from_pandas=True) for name in COLUMNS})


def ddl_schema() -> str:
    """The output columns as a Spark DDL schema string, for ``mapInPandas`` (docs/SCALE.md)."""
    def kind(name: str) -> str:
        return "bigint" if name in _INT else "double" if name in _FLOAT else "string"

    return ", ".join(f"{name} {kind(name)}" for name in COLUMNS)


OPEN_END = 2**62  # the last range's stop: to the end, whatever the container's frame count says


def split_video(path: str, frames: int | None, range_frames: int) -> list[dict[str, Any]]:
    """One row (``id``, ``path``, ``start``, ``stop``) per range of ``range_frames`` frames; the last
    one runs to the end of the file (a declared frame count may be an estimate)."""
    if range_frames < 1:
        raise ValueError(f"range_frames must be >= 1, got {range_frames}")
    starts = list(range(0, max(frames or 1, 1), range_frames))
    stops = [*starts[1:], OPEN_END]
    return [{"id": path, "path": path, "start": a, "stop": b} for a, b in zip(starts, stops)]


def read_bytes(uri: str) -> bytes:
    """A local path's or a URI's bytes (URIs through pyarrow's file systems: s3://, gs://, hdfs://...)."""
    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError as exc:
            raise InputError(f"{path}: no such file") from exc
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        from pyarrow import fs
    except ImportError as exc:
        raise InputError(f"{uri}: reading URIs needs pyarrow (pip install 'fer-edge[scale]')") from exc
    try:
        filesystem, inner = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(inner) as stream:
            return stream.read()
    except (OSError, ValueError) as exc:
        raise InputError(f"{uri}: cannot read ({exc})") from exc


class BatchPredictor:
    """Classify the faces of a batch of images or video frame ranges (see the module docstring).

    ``model``: a bundled name or a path every worker can read. ``crops``: each image is already
    a face crop (one row per image, no detection). ``threads``: ONNX Runtime threads per model
    (``None``: :func:`worker_threads`). ``detector``: :class:`~fer_runtime.FaceDetector` options
    (``min_face``, ``score_threshold``...). ``video``: :class:`~fer_runtime.VideoAnalyzer` options
    for frame ranges. Instances pickle without their sessions.
    """

    def __init__(self, model: str | None = None, *, crops: bool = False, threads: int | None = None,
                 detector: dict[str, Any] | None = None, video: dict[str, Any] | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.model, self.crops, self.threads, self.max_pixels = model, crops, threads, max_pixels
        self.detector_options, self.video_options = dict(detector or {}), dict(video or {})
        self._rec: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_rec": None}  # sessions belong to a process: made again on first use

    @property
    def recognizer(self) -> Any:
        """The worker's :class:`~fer_runtime.EmotionRecognizer` (with its detector), made on first use."""
        if self._rec is None:
            from fer_runtime.detector import FaceDetector
            from fer_runtime.recognizer import EmotionRecognizer

            threads = self.threads or worker_threads()
            detector = None if self.crops else FaceDetector(threads=threads, max_pixels=self.max_pixels,
                                                            **self.detector_options)
            self._rec = EmotionRecognizer(self.model, threads=threads, detector=detector, max_pixels=self.max_pixels)
        return self._rec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "start" in batch:
            items = zip(batch["path"], batch["start"], batch["stop"], _ids(batch))
            return to_columns([row for p, a, b, i in items for row in self.video_rows(str(p), int(a), int(b), i)])
        key = next((k for k in ("bytes", "path", "image") if k in batch), None)
        if key is None:
            raise InputError(f"a batch needs a 'bytes', 'path' or 'image' column, or 'path', 'start' and 'stop' "
                             f"for video; got {sorted(batch)}")
        return to_columns([row for value, i in zip(batch[key], _ids(batch)) for row in self.image_rows(key, value, i)])

    def image_rows(self, kind: str, value: Any, source_id: str) -> list[dict[str, Any]]:
        """The rows of one image given as ``kind`` ("bytes", "path" or "image")."""
        from fer_runtime.images import load_image

        rec = self.recognizer  # a model or provider problem fails the job, not each row
        try:
            if kind == "path" and "://" not in str(value):  # a local file: opened lazily, its own name in errors
                image = load_image(str(value), max_pixels=self.max_pixels)
            else:
                data = read_bytes(str(value)) if kind == "path" else value
                image = load_image(_as_source(data), max_pixels=self.max_pixels)
            if self.crops:
                pred = rec.predict_one(image)
                box = (0, 0, image.shape[1], image.shape[0])
                return [face_row(source_id, 0, box, math.nan, pred.label, pred.probabilities)]
            faces = rec.detect(image)
        except InputError as exc:
            return [blank_row(source_id, "error", error=str(exc))]
        if not faces:
            return [blank_row(source_id, "no_face")]
        return [face_row(source_id, k, f.box, f.score, f.prediction.label, f.prediction.probabilities)
                for k, f in enumerate(faces)]

    def video_rows(self, path: str, start: int, stop: int, source_id: str) -> Iterator[dict[str, Any]]:
        """The rows of frames ``start`` to ``stop`` of a video file; a range that cannot be read (or
        stops early) ends with an error row after the rows of the frames decoded before."""
        from fer_runtime.analyzer import VideoAnalyzer
        from fer_runtime.video import open_range

        rec, frame = self.recognizer, start  # frame: the next one expected
        try:
            with open_range(path, start, stop) as video:
                for result in VideoAnalyzer(rec.pipeline, **self.video_options).run(video):
                    frame, where = result.index + 1, {"frame": result.index, "time_s": result.time_s}
                    if not result.faces:
                        yield blank_row(source_id, "no_face", **where)
                    for k, f in enumerate(result.faces):
                        yield face_row(source_id, k, f.box, f.score, f.label, f.probabilities,
                                       track=start * TRACKS_PER_RANGE + f.track, **where)
        except InputError as exc:  # VideoError is one
            yield blank_row(source_id, "error", frame=frame, error=str(exc))


def _ids(batch: dict[str, np.ndarray]) -> list[str]:
    n = len(next(iter(batch.values())))
    if "id" in batch:
        return [str(v) for v in batch["id"]]
    return [str(v) for v in batch["path"]] if "path" in batch else [str(i) for i in range(n)]


def _as_source(value: Any) -> Any:
    """Bytes as bytes (Arrow may hand them over as a NumPy bytes scalar), arrays as arrays."""
    if isinstance(value, np.bytes_):
        return bytes(value)
    if isinstance(value, (bytes, bytearray, memoryview, np.ndarray)):
        return value
    raise InputError(f"expected encoded image bytes or an image array, got a {type(value).__name__}")
