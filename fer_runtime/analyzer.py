"""VideoAnalyzer: faces in a stream of frames, followed by track id, their expressions smoothed over time.

Per frame: detect (every ``detect_every``-th frame; in between, each face's box is carried
forward along its track's velocity), track, crop and classify every face in one batch, smooth
each track's probabilities in time. One :class:`FrameResult` per frame comes out as soon as it is
known; nothing accumulates, whatever the length of the video.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fer_runtime.detector import Detection
from fer_runtime.errors import ConfigError
from fer_runtime.frames import load_frame
from fer_runtime.pipeline import FacePipeline
from fer_runtime.results import Face, FrameResult, Prediction, TrackedFace
from fer_runtime.tracking import EmaSmoother, IouTracker
from fer_runtime.video import VideoFrame, VideoSource, VideoSourceLike, open_video


class VideoAnalyzer:
    """Follow and classify the faces of a video, camera, stream or iterable of frames.

    ``pipeline``: the :class:`FacePipeline` used (``EmotionRecognizer().pipeline`` gives one).
    ``detect_every``: run the detector on every n-th frame only and carry the boxes between (the
    classifier still runs on every frame). ``smoothing_s``: time constant of the exponential
    moving average of each track's probabilities, in seconds (0: off). ``iou_threshold`` and
    ``max_age_s``: see :class:`~fer_runtime.tracking.IouTracker`. One analyzer follows one source
    at a time; :meth:`run` starts afresh (new ids from 1) each time.
    """

    def __init__(self, pipeline: FacePipeline, *, detect_every: int = 1, smoothing_s: float = 0.5,
                 iou_threshold: float = 0.3, max_age_s: float = 1.0) -> None:
        if detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {detect_every}")
        self.pipeline, self.detect_every = pipeline, int(detect_every)
        self._options = {"smoothing_s": smoothing_s, "iou_threshold": iou_threshold, "max_age_s": max_age_s}
        EmaSmoother(smoothing_s), IouTracker(iou_threshold, max_age_s)  # noqa: B018  (checks the values now)

    def run(self, source: VideoSourceLike | VideoSource, **open_options: Any) -> Iterator[FrameResult]:
        """One :class:`FrameResult` per frame of ``source`` (anything :func:`~fer_runtime.video.open_video`
        takes, or an opened :class:`VideoSource`, which is then left open)."""
        owned = not isinstance(source, VideoSource)
        video = open_video(source, **open_options) if owned else source
        try:
            for _, result in self.follow(video):
                yield result
        finally:
            if owned:
                video.close()

    def follow(self, video: VideoSource) -> Iterator[tuple[VideoFrame, FrameResult]]:
        """Each frame of an opened source with its result (for drawing on the frame, say)."""
        state = _State(IouTracker(self._options["iou_threshold"], self._options["max_age_s"]),
                       EmaSmoother(self._options["smoothing_s"]))
        for frame in video:
            yield frame, self.step(state, frame, video)

    def step(self, state: _State, frame: VideoFrame, video: VideoSource) -> FrameResult:
        order = video.color_order
        arr = load_frame(frame.image, order, self.pipeline.detector.max_pixels)
        detect = state.frames % self.detect_every == 0
        state.frames += 1
        if detect:
            found = self.pipeline.detector.detect_array(arr, order)
            since = frame.time_s - state.last_detect_s if self.detect_every > 1 else 0.0
            ids = state.tracker.update([d.box for d in found], frame.time_s, since_last_s=since + 1e-9)
            state.last, state.last_detect_s = dict(zip(ids, found)), frame.time_s
        else:
            ids, found = state.carried(frame.time_s, arr.shape[:2])
        faces = self.pipeline.classify(arr, found, order)
        alive = {t.id for t in state.tracker.tracks}
        state.smoother.forget(alive)
        state.last = {k: v for k, v in state.last.items() if k in alive}
        tracked = tuple(state.tracked(track, face, frame.time_s, detect) for track, face in zip(ids, faces))
        return FrameResult(frame.index, frame.time_s, tracked, video.dropped, arr.shape[:2])


@dataclass
class _State:
    """What one run carries from frame to frame: the tracker, the smoother and each live track's
    last detection (for carrying its box)."""

    tracker: IouTracker
    smoother: EmaSmoother
    last: dict[int, Detection] = field(default_factory=dict)
    frames: int = 0
    last_detect_s: float = 0.0

    def carried(self, time_s: float, size: tuple[int, int]) -> tuple[list[int], list[Detection]]:
        """The last detections of the tracks found at the last detection, moved along their velocity;
        a box carried mostly (over 75%) out of the frame is dropped, not classified from edge pixels."""
        ids, moved = [], []
        by_id = {t.id: t for t in self.tracker.tracks}
        for track_id, det in self.last.items():
            track = by_id.get(track_id)
            if track is None:
                continue
            x, y, w, h = track.predicted(time_s)
            inside = max(0.0, min(x + w, size[1]) - max(x, 0.0)) * max(0.0, min(y + h, size[0]) - max(y, 0.0))
            if inside < 0.25 * w * h:
                continue
            dx, dy = x - det.box[0], y - det.box[1]
            ids.append(track_id)
            moved.append(Detection((x, y, w, h), det.score, tuple((px + dx, py + dy) for px, py in det.landmarks)))
        return ids, moved

    def tracked(self, track: int, face: Face, time_s: float, detected: bool) -> TrackedFace:
        own = face.prediction
        smoothed = Prediction(own.labels, self.smoother.update(track, own.vector, time_s))
        return TrackedFace(face.box, face.detector_score, face.landmarks, own, face.index, track, smoothed, detected)
