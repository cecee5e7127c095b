"""BatchPredictor: the runtime as the per-worker model of a data engine (Ray Data, Spark).

A ``BatchPredictor`` holds only its settings; its ONNX Runtime sessions are made on the first
batch in each worker process (and left out when it is pickled), with as many threads as the
worker's CPU share. A batch is a dict of columns (``dict[str, np.ndarray]``, what Ray Data's
``map_batches`` passes with ``batch_format="numpy"``):

* images: ``id`` (optional; the rows' ``source``) and one of ``bytes`` (encoded image files),
  ``path`` (files or URIs the worker can read) or ``image`` (decoded arrays); an optional
  ``error`` column marks inputs already known to be unreadable;
* video: ``path``, ``start`` and ``stop``: a frame range of a file (see :func:`split_video`).

It returns the columns of :func:`output_columns`, the row spec of :mod:`fer_runtime.rows` that
every output shares: one row per face found (per image with ``crops=True``), a ``no_face`` row for
an image or frame without one, and an ``error`` row with the reason for an input that cannot be
read; a bad input never fails the batch. Nothing here imports Ray.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from fer_runtime.errors import ConfigError, InputError
from fer_runtime.images import DEFAULT_MAX_PIXELS
from fer_runtime.labels import LABELS
from fer_runtime.rows import INT_COLUMNS, TEXT_COLUMNS, columns, complete, ddl_schema, status_row

TRACKS_PER_RANGE = 1_000_000
"""Video track ids restart in each frame range; a row's ``track`` is start frame x this + the id in the range."""


def output_columns(labels: tuple[str, ...] = LABELS) -> list[str]:
    """The columns every batch returns: :func:`fer_runtime.rows.columns` with ``raw_p_<label>``
    (batches may hold video)."""
    return columns(labels, raw=True)


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


def to_columns(rows: list[dict[str, Any]], names: list[str]) -> dict[str, np.ndarray]:
    """Rows -> one NumPy array per column of ``names``: int64 columns as object arrays holding ints
    or None, floats as float64 (NaN where empty), text as object arrays."""
    filled = [complete(r, names) for r in rows]

    def column(name: str) -> np.ndarray:
        values = [r[name] for r in filled]
        if name in INT_COLUMNS or name in TEXT_COLUMNS:
            out = np.empty(len(values), object)
            out[:] = values
            return out
        return np.array([math.nan if v is None else v for v in values], np.float64)

    return {name: column(name) for name in names}


OPEN_END = 2**62  # the last range's stop: to the end, whatever the container's frame count says


def split_video(path: str, frames: int | None, range_frames: int) -> list[dict[str, Any]]:
    """One row (``id``, ``path``, ``start``, ``stop``) per range of ``range_frames`` frames; the last
    one runs to the end of the file (a declared frame count may be an estimate)."""
    if range_frames < 1:
        raise ConfigError(f"range_frames must be >= 1, got {range_frames}")
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

    ``model``: a model name (``models_dir``: where checkout models are, as for
    :class:`~fer_runtime.EmotionRecognizer`) or a path every worker can read. ``crops``: each image is already
    a face crop (one row per image, no detection). ``threads``: ONNX Runtime threads per model
    (``None``: :func:`worker_threads`). ``detector``: :class:`~fer_runtime.FaceDetector` options
    (``min_face``, ``score_threshold``...). ``video``: :class:`~fer_runtime.VideoAnalyzer` options
    for frame ranges. Instances pickle without their sessions.
    """

    def __init__(self, model: str | None = None, *, crops: bool = False, threads: int | None = None,
                 detector: dict[str, Any] | None = None, video: dict[str, Any] | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, models_dir: str | None = None) -> None:
        self.model, self.crops, self.threads, self.max_pixels = model, crops, threads, max_pixels
        self.models_dir = models_dir
        self.detector_options, self.video_options = dict(detector or {}), dict(video or {})
        self._rec: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_rec": None}  # sessions belong to a process: made again on first use

    @property
    def recognizer(self) -> Any:
        """The worker's :class:`~fer_runtime.EmotionRecognizer` (with its detector), made on first use."""
        if self._rec is None:
            from fer_runtime.app import RecognizerOptions, make_recognizer

            self._rec = make_recognizer(RecognizerOptions(
                self.model, threads=self.threads or worker_threads(), max_pixels=self.max_pixels, crops=self.crops,
                detector=self.detector_options, models_dir=self.models_dir))
        return self._rec

    @property
    def columns(self) -> list[str]:
        """The output columns, with the model's own labels."""
        return output_columns(self.recognizer.labels)

    def ddl_schema(self) -> str:
        """The output columns as a Spark DDL schema string, for ``mapInPandas`` (docs/SCALE.md)."""
        return ddl_schema(self.columns)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's rows as NumPy columns (:func:`to_columns`)."""
        return to_columns(self.rows(batch), self.columns)

    def rows(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """The batch's rows, in input order."""
        if "start" in batch:
            items = zip(batch["path"], batch["start"], batch["stop"], _ids(batch))
            return [row for p, a, b, i in items for row in self.video_rows(str(p), int(a), int(b), i)]
        key = next((k for k in ("bytes", "path", "image") if k in batch), None)
        if key is None:
            raise InputError(f"a batch needs a 'bytes', 'path' or 'image' column, or 'path', 'start' and 'stop' "
                             f"for video; got {sorted(batch)}")
        errors = batch.get("error", [None] * len(batch[key]))
        return [row for value, i, known in zip(batch[key], _ids(batch), errors)
                for row in (self.image_rows(key, value, i) if not known else [status_row(i, "error", error=known)])]

    def image_rows(self, kind: str, value: Any, source_id: str) -> list[dict[str, Any]]:
        """The rows of one image given as ``kind`` ("bytes", "path" or "image")."""
        from fer_runtime.app import image_rows
        from fer_runtime.images import load_image

        rec = self.recognizer  # a model or provider problem fails the job, not each row
        try:
            if kind == "path" and "://" not in str(value):  # a local file: opened lazily, its own name in errors
                image = load_image(str(value), max_pixels=self.max_pixels)
            else:
                data = read_bytes(str(value)) if kind == "path" else value
                image = load_image(_as_source(data), max_pixels=self.max_pixels)
            return image_rows(rec, source_id, image, self.crops)[0]
        except InputError as exc:
            return [status_row(source_id, "error", error=str(exc))]

    def video_rows(self, path: str, start: int, stop: int, source_id: str) -> Iterator[dict[str, Any]]:
        """The rows of frames ``start`` to ``stop`` of a video file; a range that cannot be read (or
        stops early) ends with an error row after the rows of the frames decoded before."""
        from fer_runtime.analyzer import VideoAnalyzer
        from fer_runtime.video import open_range

        rec, frame = self.recognizer, start  # frame: the next one expected
        try:
            with open_range(path, start, stop) as video:
                for result in VideoAnalyzer(rec.pipeline, **self.video_options).run(video):
                    frame = result.index + 1
                    for row in result.to_rows(source_id):
                        if row.get("track") is not None:
                            row["track"] += start * TRACKS_PER_RANGE
                        yield row
        except InputError as exc:  # VideoError is one
            yield status_row(source_id, "error", frame=frame, error=str(exc))


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
