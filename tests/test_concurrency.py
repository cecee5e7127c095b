"""One recognizer and one detector shared by 8 threads, or pickled into processes: bitwise the serial
results; and memory that stays flat over many calls.

The same workloads as ``python -m fer_bench.reliability concurrency`` and ``soak``, shorter here.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fer_bench.reliability import answer, process_mismatches, threaded_mismatches, workload
from fer_runtime import EmotionRecognizer, FaceDetector


@pytest.fixture(scope="module")
def shared():
    rec = EmotionRecognizer("vgg-taper-int8", detector=FaceDetector())
    calls = workload(64)
    assert {kind for kind, _ in calls} == {"proba", "detect"}
    serial = [answer(rec, call) for call in calls]
    assert any(rec.detect(x) for kind, x in calls if kind == "detect"), "some photo frames should hold faces"
    return rec, calls, serial


def test_eight_threads_sharing_a_recognizer_and_its_detector_give_the_serial_results(shared):
    rec, calls, serial = shared
    assert threaded_mismatches(rec, calls, serial, threads=8, calls_per_thread=40) == 0


def test_recognizer_and_detector_pickle_and_give_the_same_results_in_other_processes(shared):
    rec, calls, serial = shared
    copy = pickle.loads(pickle.dumps(rec))
    assert copy.info.source == rec.info.source and copy.pipeline.detector.min_face == rec.pipeline.detector.min_face
    assert [answer(copy, c) for c in calls[:8]] == serial[:8]
    assert process_mismatches(rec, calls[:24], serial[:24], processes=2) == 0


def test_a_recognizer_with_an_injected_session_refuses_to_pickle():
    real = EmotionRecognizer("vgg-taper-int8")
    injected = EmotionRecognizer(session=real._session)
    np.testing.assert_array_equal(injected.predict_proba(np.zeros((48, 48), np.uint8)),
                                  real.predict_proba(np.zeros((48, 48), np.uint8)))
    with pytest.raises(TypeError, match="injected session cannot be pickled"):
        pickle.dumps(injected)


def test_memory_stays_flat_over_many_calls():
    """A short soak (the benchmark runs 1,000,000 and 100,000 calls against a 5 MB bound): after a
    warm-up, RSS grows by less than a loose 64 MB over 20,000 predict_proba and 2,000 detect calls."""
    from fer_bench.reliability import run_soak

    result = run_soak(proba_calls=20_000, detect_calls=2_000)
    for kind in ("predict_proba", "detect"):
        assert result[kind]["growth_mb"] < 64, (kind, result[kind]["trace"])
