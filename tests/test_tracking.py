"""The IoU tracker and the time-aware smoother (pure NumPy, no models)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fer_runtime.tracking import EmaSmoother, IouTracker, greedy_match, iou_matrix


def test_iou_matrix_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [10, 0, 10, 10]], float)
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [100, 100, 5, 5]], float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 1] == 1.0 and iou[0, 0] == pytest.approx(50 / 150) and iou[0, 2] == 0
    assert greedy_match(iou, 0.3) == [(0, 1), (1, 0)]  # (0, 1) first: the best; then row 1 takes what is left
    assert greedy_match(iou, 0.9) == [(0, 1)]
    assert greedy_match(np.zeros((0, 3)), 0.3) == []
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou_matrix(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 0  # empty boxes: no NaN


def _moving(start: tuple[float, float], velocity: tuple[float, float], t: float, size: float = 40) -> tuple:
    return (start[0] + velocity[0] * t - size / 2, start[1] + velocity[1] * t - size / 2, size, size)


@pytest.mark.parametrize("fps", [15, 30, 60])
def test_straight_and_crossing_motion_keep_their_ids(fps):
    """Two faces cross (their boxes overlap for several frames, one passing in front of the other);
    a third moves in a straight line. Constant-velocity prediction keeps every id."""
    tracker = IouTracker()
    seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for i in range(3 * fps):
        t = i / fps
        boxes = [_moving((50, 200), (120, 0), t), _moving((410, 210), (-120, 0), t), _moving((100, 60), (60, 20), t)]
        for face, track in enumerate(tracker.update(boxes, t)):
            seen[face].add(track)
    assert [len(ids) for ids in seen.values()] == [1, 1, 1]
    assert len(set.union(*seen.values())) == 3


def test_ids_are_never_reused_and_a_face_gone_too_long_gets_a_new_one():
    tracker = IouTracker(max_age_s=0.5)
    box = (100.0, 100.0, 50.0, 50.0)
    assert tracker.update([box], 0.0) == [1]
    assert tracker.update([], 0.3) == []
    assert tracker.update([box], 0.4) == [1]  # back within max_age: the same id
    assert tracker.update([], 0.6) == []
    assert tracker.update([box], 1.0) == [2]  # gone 0.6 s > 0.5: a new id
    assert tracker.update([box, (300.0, 100.0, 50.0, 50.0)], 1.1) == [2, 3]
    assert tracker.update([(300.0, 100.0, 50.0, 50.0)], 2.0) == [4]  # track 2 and 3 ended; 4 is new, 1-3 never come back
    assert {t.id for t in tracker.tracks} == {4}


def test_tracker_rejects_bad_settings():
    for kwargs in ({"iou_threshold": 0}, {"max_age_s": -1}, {"velocity_smoothing": 2}):
        with pytest.raises(ValueError):
            IouTracker(**kwargs)


def test_smoothing_is_the_same_at_any_frame_rate():
    """A step from one distribution to another, sampled at 15 and 60 fps: after the same time the
    smoothed values agree (exactly, up to rounding), and after one time constant 63% of the step is done."""
    before, after = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    results = {}
    for fps in (15, 60):
        smoother = EmaSmoother(time_constant_s=0.5)
        out = smoother.update(1, before, 0.0)
        for i in range(1, fps + 1):  # one second after the step, which happens right after t = 0
            out = smoother.update(1, after, i / fps)
        results[fps] = out
    np.testing.assert_allclose(results[15], results[60], atol=1e-12)
    np.testing.assert_allclose(results[15][1], 1 - math.exp(-1.0 / 0.5), atol=1e-12)


def test_smoothing_off_per_track_and_forgetting():
    smoother = EmaSmoother(0)
    np.testing.assert_array_equal(smoother.update(1, np.array([0.2, 0.8]), 0.0), [0.2, 0.8])
    np.testing.assert_array_equal(smoother.update(1, np.array([0.9, 0.1]), 0.1), [0.9, 0.1])
    on = EmaSmoother(1.0)
    on.update(1, np.array([1.0, 0.0]), 0.0)
    np.testing.assert_array_equal(on.update(2, np.array([0.0, 1.0]), 0.5), [0.0, 1.0])  # a new track starts raw
    on.forget({2})
    np.testing.assert_array_equal(on.update(1, np.array([0.0, 1.0]), 0.6), [0.0, 1.0])  # track 1 forgotten
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            EmaSmoother(bad)
