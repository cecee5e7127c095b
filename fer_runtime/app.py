"""What the commands (``fer-predict``, ``fer-batch``) share: a recognizer made from options, one
rule set for finding inputs, and one image -> rows step.

Library code: nothing here prints or exits; the commands turn its exceptions into messages.
"""

from __future__ import annotations

import glob
import inspect
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fer_runtime.detector import FaceDetector
from fer_runtime.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from fer_runtime.recognizer import EmotionRecognizer
from fer_runtime.results import Face
from fer_runtime.rows import face_rows
from fer_runtime.video import VIDEO_SUFFIXES

DETECTOR_OPTIONS = ("min_face", "score_threshold", "nms_threshold", "max_size")


def detector_defaults() -> dict[str, Any]:
    """:class:`FaceDetector`'s own defaults for the options commands expose, so theirs cannot drift."""
    params = inspect.signature(FaceDetector).parameters
    return {name: params[name].default for name in DETECTOR_OPTIONS}


@dataclass(frozen=True)
class RecognizerOptions:
    """How a command builds its recognizer. ``threads``: per model (None: ONNX Runtime's default).
    ``crops``: inputs are face crops, so no detector is made. ``detector``: :data:`DETECTOR_OPTIONS`.
    ``tta`` and ``ensemble``: the accuracy options of :class:`EmotionRecognizer`; ``precision``: its
    choice between a model's fp32 and int8 files ("auto": the faster on this CPU)."""

    model: str | None = None
    providers: str = "auto"
    threads: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    crops: bool = False
    detector: dict[str, Any] = field(default_factory=dict)
    models_dir: str | None = None
    tta: str | None = None
    ensemble: tuple[str, ...] = ()
    precision: str = "auto"


def make_recognizer(options: RecognizerOptions) -> EmotionRecognizer:
    """The recognizer, and unless ``crops`` its detector made now (not on first use), so that a
    model, provider or setting problem stops a run before any work."""
    session = {"providers": options.providers, "threads": options.threads}
    detector = None if options.crops else FaceDetector(max_pixels=options.max_pixels, **options.detector, **session)
    return EmotionRecognizer(options.model, max_pixels=options.max_pixels, detector=detector,
                             models_dir=options.models_dir, tta=options.tta,
                             ensemble=list(options.ensemble) or None, precision=options.precision, **session)


# --- inputs ---------------------------------------------------------------------------------


class Input(NamedTuple):
    """One input: its path (or URI), its name relative to the folder it was found in (the name an
    annotated copy gets), and an error already known (e.g. an unreadable folder)."""

    path: str
    name: Path
    error: str | None = None


def is_uri(item: str) -> bool:
    return "://" in item


def wanted(path: str | os.PathLike[str]) -> bool:
    """Whether a file found in a folder is an input: an image or video suffix."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def walk(root: Path) -> Iterator[Input]:
    """Image and video files under ``root``, sorted, following directory symlinks but each real
    folder once (a symlink loop ends there); folders that cannot be listed come out as errors."""
    seen: set[str] = set()
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if wanted(name):
                yield Input(str(path), path.relative_to(root))
    for exc in unreadable:
        path = Path(exc.filename or root)
        yield Input(str(path), path.relative_to(root) if path.is_relative_to(root) else Path(path.name),
                    f"cannot list the folder ({exc.strerror or exc})")


def find_inputs(items: Iterable[str | os.PathLike[str]]) -> Iterator[Input]:
    """The one rule set for what commands are given: a URI (``rtsp://``, ``s3://``...) as it is; a
    folder searched recursively (:func:`walk`); a glob pattern that names no file expanded (sorted);
    anything else as given, whatever its suffix (it fails later, as a row, if it cannot be read)."""
    for item in items:
        text = os.fspath(item)
        if is_uri(text):
            yield Input(text, Path(text.rstrip("/").rsplit("/", 1)[-1] or text))
        elif os.path.isdir(text):
            yield from walk(Path(text))
        elif not os.path.lexists(text) and glob.has_magic(text):
            for match in sorted(glob.glob(text, recursive=True)):
                if os.path.isfile(match):
                    yield Input(match, Path(Path(match).name))
        else:
            yield Input(text, Path(Path(text).name))


# --- one image -> rows ------------------------------------------------------------------------


def image_faces(recognizer: EmotionRecognizer, image: np.ndarray, crops: bool) -> list[Face]:
    """The faces of one loaded image: detected, or with ``crops`` the whole image as one face."""
    if not crops:
        return recognizer.detect(image)
    prediction = recognizer.predict_one(image)
    return [Face((0, 0, int(image.shape[1]), int(image.shape[0])), None, None, prediction, 0)]


def image_rows(recognizer: EmotionRecognizer, source: str, image: np.ndarray,
               crops: bool) -> tuple[list[dict[str, Any]], list[Face]]:
    """The rows of one loaded image (one per face, or one ``no_face`` row) and its faces."""
    faces = image_faces(recognizer, image, crops)
    return face_rows(source, faces), faces
