"""Faces followed over time: an IoU tracker with constant-velocity prediction, and time-aware smoothing.

Pure NumPy and the standard library. Both work in seconds, not frames, so that they behave the
same at 15 and at 60 frames per second, and when frames are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fer_runtime.errors import ConfigError

Box = tuple[float, float, float, float]  # x, y, width, height


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (M, 4) with every box of ``b`` (N, 4), boxes as x, y, w, h -> (M, N)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs, best IoU first, each row and column used once, IoU at least ``threshold``."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    rows, cols = np.nonzero(iou >= threshold)
    used_r, used_c = set(), set()
    for k in np.argsort(-iou[rows, cols], kind="stable"):
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


@dataclass
class Track:
    """One face followed over time: ``id`` (never reused), its last box and when it was last
    detected, and its centre's velocity in pixels per second (for predicting where it is next)."""

    id: int
    box: Box
    last_time: float
    first_time: float
    velocity: tuple[float, float] = (0.0, 0.0)
    hits: int = 1

    def predicted(self, time_s: float) -> Box:
        """The box moved by its velocity to ``time_s``."""
        dt = time_s - self.last_time
        x, y, w, h = self.box
        return (x + self.velocity[0] * dt, y + self.velocity[1] * dt, w, h)


class IouTracker:
    """Give each detected face a track id that stays with it while it is in view.

    Each frame's boxes are matched to the tracks' predicted boxes (constant velocity) greedily by
    IoU, best first; a match needs IoU of at least ``iou_threshold``. A box that matches no track
    starts a new one (ids count up from 1 and are never reused); a track not matched for longer
    than ``max_age_s`` seconds ends, so a face that comes back after that gets a new id.
    ``velocity_smoothing`` (0-1) is the weight of the newest velocity estimate (1: no smoothing).
    """

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.0, velocity_smoothing: float = 0.5) -> None:
        if not 0.0 < iou_threshold <= 1.0 or max_age_s < 0 or not 0.0 <= velocity_smoothing <= 1.0:
            raise ConfigError(f"iou_threshold must be in (0, 1], max_age_s >= 0 and velocity_smoothing in [0, 1]; "
                             f"got {iou_threshold}, {max_age_s}, {velocity_smoothing}")
        self.iou_threshold, self.max_age_s, self.velocity_smoothing = iou_threshold, max_age_s, velocity_smoothing
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: Sequence[Box], time_s: float, since_last_s: float = 0.0) -> list[int]:
        """The track id of each box detected at ``time_s`` (seconds, not decreasing), in order.

        ``since_last_s``: the time since the previous detection, when detection runs only on some
        frames; a track then ends only when unseen for longer than that as well as ``max_age_s``."""
        age = max(self.max_age_s, since_last_s)
        self.tracks = [t for t in self.tracks if time_s - t.last_time <= age]
        predicted = np.array([t.predicted(time_s) for t in self.tracks], np.float64).reshape(-1, 4)
        pairs = greedy_match(iou_matrix(predicted, np.asarray(boxes, np.float64)), self.iou_threshold)
        ids = [0] * len(boxes)
        for r, c in pairs:
            self._follow(self.tracks[r], boxes[c], time_s)
            ids[c] = self.tracks[r].id
        for c, box in enumerate(boxes):
            if ids[c] == 0:
                self.tracks.append(Track(self._next_id, tuple(map(float, box)), time_s, time_s))  # type: ignore[arg-type]
                ids[c] = self._next_id
                self._next_id += 1
        return ids

    def _follow(self, track: Track, box: Box, time_s: float) -> None:
        dt = time_s - track.last_time
        if dt > 0:
            (x0, y0, w0, h0), (x1, y1, w1, h1) = track.box, box
            vx = ((x1 + w1 / 2) - (x0 + w0 / 2)) / dt
            vy = ((y1 + h1 / 2) - (y0 + h0 / 2)) / dt
            a = self.velocity_smoothing if track.hits > 1 else 1.0
            track.velocity = (a * vx + (1 - a) * track.velocity[0], a * vy + (1 - a) * track.velocity[1])
        track.box, track.last_time, track.hits = tuple(map(float, box)), time_s, track.hits + 1  # type: ignore[assignment]


class EmaSmoother:
    """Per-track exponential moving average of probability vectors with a time constant in seconds.

    A new value at time t moves the average by a = 1 - exp(-(t - t_prev) / ``time_constant_s``) of
    the way towards it, so a steady input is followed at the same pace at any frame rate (after
    ``time_constant_s`` seconds a step has come 63% of the way). A track's first value is taken as is.
    ``time_constant_s=0`` turns smoothing off (the raw values come back).
    """

    def __init__(self, time_constant_s: float = 0.5) -> None:
        if not time_constant_s >= 0 or math.isinf(time_constant_s):
            raise ConfigError(f"time_constant_s must be a finite number >= 0, got {time_constant_s}")
        self.time_constant_s = float(time_constant_s)
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def update(self, track: int, values: np.ndarray, time_s: float) -> np.ndarray:
        """The smoothed values of ``track`` after ``values`` seen at ``time_s``."""
        values = np.asarray(values, np.float64)
        prev = self._state.get(track)
        if prev is None or self.time_constant_s == 0:
            out = values
        else:
            a = 1.0 - math.exp(-max(0.0, time_s - prev[1]) / self.time_constant_s)
            out = prev[0] + a * (values - prev[0])
        self._state[track] = (out, time_s)
        return out

    def forget(self, keep: set[int]) -> None:
        """Drop the state of tracks not in ``keep`` (ended tracks), so memory stays constant."""
        for track in [t for t in self._state if t not in keep]:
            del self._state[track]
