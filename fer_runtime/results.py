"""The one result model: a face's expression, a face in a frame, a tracked face, a frame.

Every output of the runtime is written from these types: ``to_dict()`` gives a JSON-ready dict
(nested: box, landmarks, probabilities), ``to_row()`` / ``to_rows()`` the flat row of
:mod:`fer_runtime.rows` (one column spec for CSV, JSON Lines, Parquet and DataFrames). Numbers in
both are rounded once, here (:data:`DECIMALS`), so a face has the same values in every output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DECIMALS = 6  # probabilities, confidences, detector scores and times in dicts and rows
LANDMARK_DECIMALS = 2  # pixels


def _round(value: float | None, decimals: int = DECIMALS) -> float | None:
    return None if value is None else round(float(value), decimals)


class Probabilities(Mapping[str, float]):
    """A read-only ``{label: probability}`` view over a :class:`Prediction`'s vector, in label order."""

    __slots__ = ("_index", "_labels", "_vector")

    def __init__(self, labels: tuple[str, ...], vector: np.ndarray) -> None:
        self._labels, self._vector = labels, vector
        self._index = {label: i for i, label in enumerate(labels)}

    def __getitem__(self, label: str) -> float:
        return float(self._vector[self._index[label]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v:.4f}" for k, v in self.items()) + "}"


@dataclass(frozen=True, eq=False)
class Prediction:
    """One face's expression: the model's ``labels`` and its calibrated probabilities ``vector``
    (float32, one per label, summing to 1; read-only).

    ``index`` and ``label``: the most probable class; ``confidence``: its probability;
    ``probabilities``: a ``{label: probability}`` view of the vector.
    """

    labels: tuple[str, ...]
    vector: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        vector = np.array(self.vector, dtype=np.float32)  # a copy: the caller's array may change
        if vector.shape != (len(self.labels),):
            raise ValueError(f"a Prediction needs one probability per label: {len(self.labels)} labels, "
                             f"vector of shape {vector.shape}")
        vector.flags.writeable = False
        object.__setattr__(self, "vector", vector)

    @property
    def index(self) -> int:
        return int(self.vector.argmax())

    @property
    def label(self) -> str:
        return self.labels[self.index]

    @property
    def confidence(self) -> float:
        return float(self.vector[self.index])

    @property
    def probabilities(self) -> Probabilities:
        return Probabilities(self.labels, self.vector)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Prediction):
            return NotImplemented
        return self.labels == other.labels and bool(np.array_equal(self.vector, other.vector))

    # Equal by value, and arrays do not hash: unhashable, as a dataclass with eq and no frozen hash would be.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Prediction(label={self.label!r}, confidence={self.confidence:.4f})"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": _round(self.confidence),
                "probabilities": {k: _round(v) for k, v in self.probabilities.items()}}

    def columns(self, prefix: str = "p_") -> dict[str, float | None]:
        """``{prefix + label: probability}``, rounded as in every output."""
        return {f"{prefix}{k}": _round(v) for k, v in self.probabilities.items()}


Box = tuple[int, int, int, int]
Landmarks = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Face:
    """A face and its expression.

    ``box``: (x, y, width, height) in whole pixels of the image it was found in, clipped to it (a
    face crop given as such is the whole image). ``detector_score``: the face detector's confidence
    (``None`` for crops that were not detected). ``landmarks``: five (x, y) points: right eye, left
    eye, nose tip, right and left mouth corner (the subject's right); ``None`` for crops.
    ``prediction``: its expression in this image. ``index``: its rank in the image, 0 being the best
    detector score.
    """

    box: Box
    detector_score: float | None
    landmarks: Landmarks | None = field(repr=False)
    prediction: Prediction
    index: int = 0

    @property
    def label(self) -> str:
        """The label every output reports for this face (smoothed over time for a :class:`TrackedFace`)."""
        return self.reported.label

    @property
    def reported(self) -> Prediction:
        """The prediction its rows' ``label``, ``confidence`` and ``p_*`` columns report."""
        return self.prediction

    def to_dict(self) -> dict[str, Any]:
        marks = None if self.landmarks is None else [[_round(x, LANDMARK_DECIMALS), _round(y, LANDMARK_DECIMALS)]
                                                      for x, y in self.landmarks]
        return {"face": self.index, "box": list(self.box), "detector_score": _round(self.detector_score),
                "landmarks": marks, **self.prediction.to_dict()}

    def to_row(self) -> dict[str, Any]:
        """The face's columns of the row spec (:func:`fer_runtime.rows.columns`); ``raw_p_*`` is the
        frame's own prediction (the same as ``p_*`` when nothing is smoothed)."""
        x, y, w, h = self.box
        reported = self.reported
        return {"track": None, "face": self.index, "x": x, "y": y, "w": w, "h": h,
                "detector_score": _round(self.detector_score), "label": reported.label,
                "confidence": _round(reported.confidence), **reported.columns("p_"),
                **self.prediction.columns("raw_p_"), "status": "ok", "error": None}


@dataclass(frozen=True)
class TrackedFace(Face):
    """A face in a video frame: a :class:`Face` plus its ``track`` id (the same while it stays in
    view), ``smoothed``: its prediction smoothed over time (rows report this one; ``prediction``
    stays the frame's own), and ``detected``: False when the box was carried from an earlier
    detection rather than found in this frame."""

    track: int = 0
    smoothed: Prediction | None = field(default=None, repr=False)
    detected: bool = True

    @property
    def reported(self) -> Prediction:
        return self.smoothed if self.smoothed is not None else self.prediction

    def to_dict(self) -> dict[str, Any]:
        own = self.prediction.to_dict()
        return {**super().to_dict(), **self.reported.to_dict(), "track": self.track, "detected": self.detected,
                "raw": own}

    def to_row(self) -> dict[str, Any]:
        return {**super().to_row(), "track": self.track}


@dataclass(frozen=True)
class FrameResult:
    """One processed frame: its ``index`` in the source, its time in seconds, its faces (best
    detector score first), how many frames a live source had dropped so far, and its (height, width)."""

    index: int
    time_s: float
    faces: tuple[TrackedFace, ...]
    dropped: int = 0
    size: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.index, "time_s": _round(self.time_s), "size": list(self.size), "dropped": self.dropped,
                "faces": [face.to_dict() for face in self.faces]}

    def to_rows(self, source: str) -> list[dict[str, Any]]:
        """One row per face, or one ``no_face`` row (see :mod:`fer_runtime.rows`)."""
        from fer_runtime.rows import face_rows

        return face_rows(source, self.faces, frame=self.index, time_s=self.time_s)
