"""Video: sources (files, cameras, URLs, iterables), the analyzer's tracks, and fer-predict on videos.

The clips are generated from the test photos (tests/data/photos, not FER2013) by fer_bench.clips.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_bench.clips import Mover, assign_tracks, identity_switches, moving_faces, write_clip
from fer_runtime import LABELS, EmotionRecognizer
from fer_runtime.analyzer import VideoAnalyzer
from fer_runtime.errors import InputError
from fer_runtime.rows import columns
from fer_runtime.video import CaptureSource, VideoError, open_video

SIZE = (240, 320)
FPS = 10.0


def _movers() -> list[Mover]:
    # Two faces crossing the frame in opposite directions on separate lanes; the second leaves
    # from 1.5 s to 3.2 s (longer than the 1 s max age), so it must come back with a new id.
    return [Mover((80, 70), (50, 0), 56), Mover((240, 170), (-50, 0), 56, away=(1.5, 3.2))]


@pytest.fixture(scope="module")
def rec() -> EmotionRecognizer:
    return EmotionRecognizer("vgg-taper-int8")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list]:
    """A 4.5 s, 10 fps MPEG-4 clip and the true boxes of each frame."""
    path = tmp_path_factory.mktemp("clips") / "two_faces.mp4"
    frames, truths = [], []
    for frame, truth in moving_faces(SIZE, _movers(), FPS, 45):
        frames.append(frame)
        truths.append(truth)
    assert write_clip(path, iter(frames), FPS) == 45
    return path, truths


def _predict(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_runtime", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


# --- sources ---------------------------------------------------------------------------------


def test_generated_clip_reads_back_with_its_timestamps(clip):
    path, _ = clip
    with open_video(path) as video:
        assert video.frame_count == 45 and video.fps == pytest.approx(FPS) and not video.live
        frames = list(video)
    assert [f.index for f in frames] == list(range(45))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(45) / FPS, atol=1e-6)
    assert frames[0].image.shape == (*SIZE, 3) and frames[0].image.dtype == np.uint8
    assert video.color_order == "bgr"


def test_sources_that_cannot_be_opened_say_so(tmp_path):
    with pytest.raises(VideoError, match="camera 97: cannot open .*no camera with that index"):
        open_video(97)
    with pytest.raises(VideoError, match="cannot open .*cannot be reached"):
        open_video("http://127.0.0.1:9/none.mp4")  # nothing listens on the discard port
    with pytest.raises(VideoError, match="no such file"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "noise.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(VideoError, match="not a readable video"):
        open_video(tmp_path / "noise.mp4")
    with pytest.raises(InputError, match="one image is not a video"):
        open_video(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="not a bool"):
        open_video(True)
    with pytest.raises(InputError, match="cannot read video from a float"):
        open_video(1.5)  # type: ignore[arg-type]


def test_truncated_file_stops_with_an_error_after_its_good_frames(tmp_path):
    path = tmp_path / "clip.mkv"  # Matroska keeps its early frames decodable when cut
    write_clip(path, (f for f, _ in moving_faces(SIZE, _movers(), FPS, 30)), FPS)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(VideoError, match=r"decoding stopped at frame (\d+) of 30: the file is truncated"):
        for frame in open_video(cut):
            seen.append(frame.index)
    assert 5 <= len(seen) < 29 and seen == list(range(len(seen)))


def test_iterables_of_frames_and_their_errors(rec):
    frames = [np.zeros((48, 64, 3), np.uint8)] * 3
    results = list(VideoAnalyzer(rec.pipeline).run(frames, fps=15))
    assert [(r.index, round(r.time_s, 4), r.faces) for r in results] == [(0, 0.0, ()), (1, 0.0667, ()), (2, 0.1333, ())]
    with pytest.raises(InputError, match="frame 1 of the iterable is a str"):
        list(VideoAnalyzer(rec.pipeline).run([frames[0], "x"]))
    with pytest.raises(InputError, match="fps must be a positive"):
        open_video(frames, fps=0)


def test_drop_to_latest_skips_frames_a_slow_consumer_cannot_take(clip):
    path, _ = clip
    with CaptureSource(str(path), live=True, drop_to_latest=True) as video:
        got = []
        for frame in video:
            got.append(frame.index)
            time.sleep(0.02)  # the reader decodes a 320x240 frame far faster
    assert video.dropped > 0 and len(got) + video.dropped == 45
    assert got == sorted(got) and len(set(got)) == len(got)


def test_a_failing_reader_thread_ends_the_stream_with_an_error(clip):
    path, _ = clip
    video = CaptureSource(str(path), live=True, drop_to_latest=True)
    reads = {"n": 0}
    real = video._read

    def flaky():
        reads["n"] += 1
        if reads["n"] > 3:
            raise RuntimeError("device unplugged")
        return real()

    video._read = flaky  # type: ignore[method-assign]
    with video, pytest.raises(VideoError, match="reading stopped .*device unplugged"):
        for _ in video:
            pass


def test_http_video_files_are_read_as_files_streams_as_live():
    from fer_runtime.video import is_live_url

    assert not is_live_url("https://host/clips/a.mp4?token=x") and not is_live_url("http://h/v.MKV")
    assert is_live_url("http://camera.local/stream") and is_live_url("rtsp://cam/1") and is_live_url("udp://x:5000")


# --- the analyzer ----------------------------------------------------------------------------


def _assignments(results, truths):
    return [assign_tracks(t, [f.box for f in r.faces], [f.track for f in r.faces]) for r, t in zip(results, truths)]


def test_tracks_keep_their_ids_and_a_returning_face_gets_a_new_one(rec, clip):
    path, truths = clip
    results = list(VideoAnalyzer(rec.pipeline, max_age_s=1.0).run(path))
    assert len(results) == 45
    assigned = _assignments(results, truths)
    assert sum(len(a) for a in assigned) == sum(len(t) for t in truths)  # every face in view found and tracked
    scores = identity_switches(assigned)
    assert scores["switches"] == 0
    face1 = {track for pairs in assigned for face, track in pairs if face == 1}
    assert len(face1) == 2  # before and after its 1.7 s away
    face0 = {track for pairs in assigned for face, track in pairs if face == 0}
    assert len(face0) == 1 and not face0 & face1
    for r in results:
        for f in r.faces:
            shown = f.smoothed.probabilities
            assert set(shown) == set(LABELS) and abs(sum(shown.values()) - 1) < 1e-6
            assert f.label == max(shown, key=shown.get) == f.smoothed.label


def test_detect_every_n_carries_boxes_and_smoothing_off_keeps_raw(rec, clip):
    path, truths = clip
    results = list(VideoAnalyzer(rec.pipeline, detect_every=3, smoothing_s=0).run(path))
    detected = [all(f.detected for f in r.faces) for r in results if r.faces]
    carried = [r for r in results if r.faces and not any(f.detected for f in r.faces)]
    assert any(detected) and len(carried) >= 10
    assert identity_switches(_assignments(results, truths))["switches"] == 0
    for r in results:
        for f in r.faces:
            assert f.smoothed == f.prediction


def test_smoothed_probabilities_lag_the_raw_ones(rec, clip):
    path, _ = clip
    results = list(VideoAnalyzer(rec.pipeline, smoothing_s=1.0).run(path))
    faces = [f for r in results for f in r.faces if f.track == 1]
    raw = np.array([f.prediction.vector for f in faces])
    smooth = np.array([f.smoothed.vector for f in faces])
    np.testing.assert_allclose(smooth[0], raw[0])  # a track starts from its first raw value
    assert np.abs(np.diff(smooth, axis=0)).sum() < np.abs(np.diff(raw, axis=0)).sum()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat_over_a_long_generator(rec):
    """3,000 frames with a face moving: the resident memory (now, not the process's peak) grows by
    less than 40 MB after a warm-up (the tight figure over 100,000 frames: fer-bench video)."""
    frames = (f for f, _ in moving_faces((120, 160), [Mover((40, 60), (30, 5), 48)], 30.0, 3200))
    analyzer = VideoAnalyzer(rec.pipeline)
    rss = []
    for i, result in enumerate(analyzer.run(frames, fps=30.0)):
        if i in (200, 3199):
            rss.append(_rss_mb())
    assert result.index == 3199
    assert rss[1] - rss[0] < 40, rss


def test_sparse_detection_keeps_ids_and_drops_boxes_carried_off_the_frame(rec):
    from fer_runtime.analyzer import _State
    from fer_runtime.detector import Detection
    from fer_runtime.tracking import EmaSmoother, IouTracker

    still = [np.asarray(Image.open(Path(__file__).parent / "data" / "photos" / "astronaut.jpg").convert("RGB"))] * 100
    results = list(VideoAnalyzer(rec.pipeline, detect_every=45, max_age_s=1.0).run(still, fps=30.0))
    assert {f.track for r in results for f in r.faces} == {1}  # 1.5 s between detections, more than max_age
    state = _State(IouTracker(), EmaSmoother())
    (track,) = state.tracker.update([(280.0, 10.0, 40.0, 40.0)], 0.0)
    state.tracker.tracks[0].velocity = (400.0, 0.0)  # leaving to the right of a 320 px frame
    state.last = {track: Detection((280.0, 10.0, 40.0, 40.0), 0.9, ((290.0, 20.0),) * 5)}
    assert state.carried(0.01, (240, 320))[0] == [track]
    assert state.carried(0.2, (240, 320)) == ([], [])  # 80 px on: the box would be all outside


# --- fer-predict on videos -------------------------------------------------------------------


def test_predict_video_csv_rows_and_summary(clip):
    path, truths = clip
    done = _predict(str(path), "--csv", "--summary", "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == columns(LABELS, raw=True)
    assert {int(r["frame"]) for r in rows} == set(range(45))  # every frame has a row, faces or not
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == sum(len(t) for t in truths)
    for r in ok[:5]:
        assert abs(sum(float(r[f"p_{k}"]) for k in LABELS) - 1) < 1e-3 and r["label"] in LABELS
        assert abs(sum(float(r[f"raw_p_{k}"]) for k in LABELS) - 1) < 1e-3
    assert "dominant" in done.stderr and len({r["track"] for r in ok}) == 3


def test_predict_video_json_annotate_and_plot(clip, tmp_path):
    path, _ = clip
    out, plot = tmp_path / "annotated.mp4", tmp_path / "tracks.png"
    done = _predict(str(path), "--json", "--annotate", str(out), "--plot", str(plot), "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["source"] == str(path) and list(rows[0]) == columns(LABELS, raw=True)
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 45
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (SIZE[1], SIZE[0])
    cap.release()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_predict_truncated_video_keeps_rows_and_ends_with_an_error(tmp_path):
    path = tmp_path / "clip.mkv"
    write_clip(path, (f for f, _ in moving_faces(SIZE, _movers(), FPS, 30)), FPS)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    done = _predict(str(path), "--json", "--no-progress")
    assert done.returncode == 1 and "truncated or damaged" in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[-1]["status"] == "error" and "truncated" in rows[-1]["error"]
    assert len({r["frame"] for r in rows[:-1]}) >= 5


def test_kill_9_during_a_video_leaves_a_parseable_file(tmp_path):
    path = tmp_path / "long.mp4"
    write_clip(path, (f for f, _ in moving_faces(SIZE, _movers(), 30.0, 600)), 30.0)
    out = tmp_path / "rows.csv"
    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "fer_runtime", str(path), "--csv", "--no-progress"],
                                stdout=sink, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while out.stat().st_size < 20_000 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    text = out.read_text()
    assert text.endswith("\n")  # whole lines only: each frame's rows are written in one piece
    rows = list(csv.DictReader(io.StringIO(text)))
    frames = [int(r["frame"]) for r in rows]
    assert 0 < len(rows) and frames == sorted(frames) and max(frames) < 599
    assert all(len(r) == len(columns(LABELS, raw=True)) and None not in r.values() for r in rows)


def test_ctrl_c_ends_a_run_with_its_summary_and_plot(tmp_path):
    """How a camera run ends: SIGINT. The rows so far are out, and --summary and --plot still come."""
    path = tmp_path / "long.mp4"
    write_clip(path, (f for f, _ in moving_faces(SIZE, _movers(), 30.0, 600)), 30.0)
    out, plot = tmp_path / "rows.jsonl", tmp_path / "tracks.png"
    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "fer_runtime", str(path), "--json", "--summary", "--plot", str(plot),
                                 "--no-progress"], stdout=sink, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while out.stat().st_size < 20_000 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "dominant" in err and plot.stat().st_size > 10_000
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and max(r["frame"] for r in rows) < 599


def test_predict_takes_photos_and_videos_in_one_run(clip, tmp_path):
    path, _ = clip
    photo = Path(__file__).parent / "data" / "photos" / "astronaut.jpg"
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_photo.jpg").write_bytes(photo.read_bytes())
    (folder / "b_clip.mp4").write_bytes(path.read_bytes())
    out = tmp_path / "annotated"
    done = _predict(str(folder), "--csv", "--no-progress", "--annotate", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == columns(LABELS, raw=True)  # one header for both
    assert rows[0]["source"].endswith("a_photo.jpg") and rows[0]["frame"] == "" and rows[0]["track"] == ""
    assert rows[0]["raw_p_Happy"] == rows[0]["p_Happy"]  # a photo's own prediction is not smoothed
    video = rows[1:]
    assert {int(r["frame"]) for r in video} == set(range(45)) and all(r["source"].endswith("b_clip.mp4") for r in video)
    assert sorted(p.name for p in out.iterdir()) == ["a_photo.jpg", "b_clip.mp4"]


def test_predict_refuses_what_does_not_fit(clip):
    path, _ = clip
    photo = Path(__file__).parent / "data" / "photos" / "astronaut.jpg"
    done = _predict(str(photo), str(path), "--annotate", "out.mp4")
    assert done.returncode == 2 and "one video source" in done.stderr
    done = _predict(str(path), "--annotate", str(path))
    assert done.returncode == 2 and "is the input video" in done.stderr
    done = _predict(str(photo), "--summary")
    assert done.returncode == 2 and "for videos" in done.stderr


def test_video_benchmark_reports_stages_tracking_and_memory(rec, clip):
    from fer_bench.video import STAGES, long_run, run_clip, video_markdown

    path, truths = clip
    run = run_clip(rec, path, truths, repeats=1)
    assert run["frames"] == 45 and set(run["ms_per_frame"]) == set(STAGES)
    assert run["tracking"] == {"switches": 0, "max_ids_per_face": 2, "faces": 2}
    assert run["faces_tracked"] == run["faces_in_view"] == sum(len(t) for t in truths)
    assert rec.pipeline.detector.detect.__func__ is type(rec.pipeline.detector).detect  # the timing wrappers are gone
    lr = long_run(rec, 1200, every=300)
    assert lr["frames"] == 1200 and [n for n, _ in lr["samples"]] == [300, 600, 900, 1200]
    case = {"size": [240, 320], "faces": 2, "decode_fps": {"opencv": 1.0}, "models": {"m": run}}
    md = video_markdown({"cases": [case], "long_run": lr})
    assert "| 320x240, 2 face(s) | `m` |" in md and "1,200 generated 160x120 frames" in md
