"""Generated video clips with known faces: the test photos' faces moving over a textured background.

Each face moves in a straight line at constant speed, bouncing off the frame's edges; a face can
also leave the frame for a while and come back (``away``), so that tracking can be scored against
known identities. Frames are generated one at a time (a clip of any length costs no memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_bench.scenes import FACE_PHOTOS, background, load_photo, photo_window


@dataclass(frozen=True)
class Mover:
    """One face's path: start centre (x, y) and velocity in px/s, its width, and the interval (s)
    during which it is out of the frame (``away``: (start, end); (0, 0): never)."""

    start: tuple[float, float]
    velocity: tuple[float, float]
    width: int
    away: tuple[float, float] = (0.0, 0.0)


def _bounce(p: float, lo: float, hi: float) -> float:
    """Position p folded into [lo, hi] as if bouncing off both ends."""
    span = hi - lo
    if span <= 0:
        return lo
    q = (p - lo) % (2 * span)
    return lo + (q if q <= span else 2 * span - q)


def default_movers(n_faces: int, size: tuple[int, int], seconds: float, seed: int = 0) -> list[Mover]:
    """``n_faces`` faces in horizontal lanes of their own (a face's pasted window, about twice its
    width tall, fits its lane), moving across a frame of ``size`` (h, w) and bouncing at the sides;
    with more than one face, the second leaves for 2 s in the middle of the clip and comes back."""
    rng = np.random.default_rng(seed)
    h, w = size
    width = max(40, min(min(h, w) // 5, h // (2 * n_faces)))
    movers = []
    for i in range(n_faces):
        lane = (i + 0.5) / n_faces
        speed = float(rng.uniform(0.15, 0.3) * w) * (1 if i % 2 == 0 else -1)
        start = (float(rng.uniform(0.2, 0.8) * w), lane * h)
        away = (seconds / 2 - 1, seconds / 2 + 1) if i == 1 and seconds > 4 else (0.0, 0.0)
        movers.append(Mover(start, (speed, 0.0), width, away))
    return movers


def moving_faces(size: tuple[int, int], movers: list[Mover], fps: float, frames: int, seed: int = 0
                 ) -> Iterator[tuple[np.ndarray, list[tuple[int, tuple[float, float, float, float]]]]]:
    """RGB frames of ``size`` (h, w) and, per frame, the (face number, true box) of each face in view."""
    h, w = size
    rng = np.random.default_rng(seed)
    base = background(h, w, rng)
    photos = [(load_photo(name, flip), name) for flip in (False, True) for name in FACE_PHOTOS]
    from fer_runtime import FaceDetector

    finder = FaceDetector(min_face=12, max_size=4096)
    sprites = []
    for k, mover in enumerate(movers):
        photo, _ = photos[k % len(photos)]
        window, box = photo_window(photo, finder.detect(photo)[0].box, mover.width, context=1.5)
        sprites.append((window, box))
    for i in range(frames):
        t = i / fps
        frame = base.copy()
        truths = []
        for k, (mover, (window, (bx, by, bw, bh))) in enumerate(zip(movers, sprites)):
            if mover.away[0] <= t < mover.away[1]:
                continue
            sh, sw = window.shape[:2]
            cx = _bounce(mover.start[0] + mover.velocity[0] * t, sw / 2, w - sw / 2)
            cy = _bounce(mover.start[1] + mover.velocity[1] * t, sh / 2, h - sh / 2)
            x0, y0 = int(round(cx - sw / 2)), int(round(cy - sh / 2))
            x0, y0 = min(max(0, x0), max(0, w - sw)), min(max(0, y0), max(0, h - sh))
            frame[y0 : y0 + sh, x0 : x0 + sw] = window[: h - y0, : w - x0]
            truths.append((k, (x0 + bx, y0 + by, bw, bh)))
        yield frame, truths


def write_clip(path: Path, frames: Iterator[np.ndarray], fps: float, fourcc: str = "mp4v") -> int:
    """RGB frames written with OpenCV's VideoWriter; returns the number written."""
    import cv2

    writer, n = None, 0
    try:
        for frame in frames:
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"{path}: OpenCV cannot write {fourcc} video")
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
            n += 1
    finally:
        if writer is not None:
            writer.release()
    return n


def identity_switches(assigned: list[list[tuple[int, int]]]) -> dict[str, int]:
    """From per frame (face number, track id) pairs: switches (a face's track id changing while it
    stays in view; a new id after it was away is not one) and the number of distinct ids per face."""
    current: dict[int, int] = {}
    ids: dict[int, set[int]] = {}
    switches = 0
    for frame_pairs in assigned:
        in_view = set()
        for face, track in frame_pairs:
            in_view.add(face)
            if face in current and current[face] != track:
                switches += 1
            current[face] = track
            ids.setdefault(face, set()).add(track)
        for face in [f for f in current if f not in in_view]:
            del current[face]  # left the frame (or was missed): its next id is judged afresh
    return {"switches": switches, "max_ids_per_face": max((len(v) for v in ids.values()), default=0),
            "faces": len(ids)}


def assign_tracks(truths: list[tuple[int, tuple[float, float, float, float]]], boxes: list[tuple[float, ...]],
                  tracks: list[int], threshold: float = 0.3) -> list[tuple[int, int]]:
    """Each true face's track id: the track whose box overlaps it best (IoU >= threshold)."""
    from fer_bench.scenes import iou

    pairs = []
    for face, truth in truths:
        best = max(((iou(truth, tuple(b)), t) for b, t in zip(boxes, tracks)), default=(0.0, 0))
        if best[0] >= threshold:
            pairs.append((face, best[1]))
    return pairs


