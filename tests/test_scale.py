"""Ray Data: a local instance (2 CPUs) started and stopped here; bad inputs as rows; a killed actor.

The images are generated from the test photos (tests/data/photos, not FER2013).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

from fer_bench.clips import Mover, default_movers, moving_faces, write_clip
from fer_runtime.batch import OPEN_END, BatchPredictor
from fer_runtime.scale import dataset, expand, plan, read_manifest, run

PHOTOS = Path(__file__).parent / "data" / "photos"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Four face photos, a cat, a broken file and a 3 s clip with two faces."""
    root = tmp_path_factory.mktemp("archive")
    for name in ("astronaut.jpg", "grace_hopper.jpg", "cameraman.jpg", "chelsea.jpg"):
        (root / name).write_bytes((PHOTOS / name).read_bytes())
    (root / "sub").mkdir()
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    movers = [Mover((80, 70), (50, 0), 56), Mover((240, 170), (-50, 0), 56)]
    write_clip(root / "sub" / "clip.mp4", (f for f, _ in moving_faces((240, 320), movers, 10.0, 30)), 10.0)
    return root


def test_expand_manifest_and_plan(archive, tmp_path):
    found = expand([str(archive)])
    paths = [p for p, _ in found]
    assert [Path(p).name for p in paths] == ["astronaut.jpg", "cameraman.jpg", "chelsea.jpg", "grace_hopper.jpg",
                                             "broken.png", "clip.mp4"] and all(e is None for _, e in found)
    assert expand([str(archive / "*.jpg")]) == found[:4] and expand(["s3://bucket/a.jpg"]) == [("s3://bucket/a.jpg", None)]
    assert expand([f"file://{archive}/"]) == [(f"file://{p}", None) for p in paths]  # a URI prefix is listed
    (tmp_path / "m.csv").write_text("path,note\n" + "\n".join(f"{p},x" for p in paths[:2]) + "\n")
    assert read_manifest(str(tmp_path / "m.csv")) == paths[:2]
    work = plan(found, range_frames=12)
    assert len(work.images) == 5 and [(r["start"], r["stop"]) for r in work.ranges] == [(0, 12), (12, 24), (24, OPEN_END)]


def test_fer_batch_command(archive, tmp_path):
    """The command starts (and stops) its own local Ray instance."""
    out = tmp_path / "rows"
    command = [sys.executable, "-c", "from fer_runtime.cli.batch import main; main()"]
    done = subprocess.run([*command, str(archive), "-o", str(out), "--range-frames", "12"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 images and 30 video frames in" in done.stderr and "1 error, 1 no_face, 63 ok" in done.stderr
    assert pq.read_table(out).num_rows == 65
    again = subprocess.run([*command, str(archive), "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "already holds files" in again.stderr
    usage = subprocess.run([*command, "-o", str(tmp_path / "x")], capture_output=True, text=True, timeout=600)
    assert usage.returncode == 2 and "give INPUTS or --manifest" in usage.stderr


def test_settings_that_cannot_run_are_refused_before_any_work(local_ray, archive, tmp_path):
    from fer_runtime.errors import InputError, ModelError

    with pytest.raises(InputError, match="more than the cluster's 2 CPUs"):
        run([str(archive)], str(tmp_path / "a"), threads_per_worker=3)
    with pytest.raises(ModelError, match="no such model file"):
        run([str(archive)], str(tmp_path / "b"), predictor=BatchPredictor("/nowhere/model.onnx"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_run_writes_ordered_rows_with_errors_as_rows(local_ray, archive, tmp_path):
    out = tmp_path / "rows"
    info = run([str(archive)], str(out), range_frames=12, threads_per_worker=1, batch_size=2)
    assert info["images"] == 5 and info["video_ranges"] == 3 and info["workers"] == 2
    table = pq.read_table(out).to_pandas()
    images = table[table["frame"].isna()]
    assert [Path(i).name for i in images["source"]] == ["astronaut.jpg", "cameraman.jpg", "chelsea.jpg",
                                                    "grace_hopper.jpg", "broken.png"]  # input order
    assert list(images["status"]) == ["ok", "ok", "no_face", "ok", "error"]
    assert "broken.png: not a readable image" in images["error"].iloc[-1]
    video = table[table["frame"].notna()]
    assert list(video["frame"]) == sorted(video["frame"]) and set(video["frame"]) == set(range(30))
    assert len(video) == 60 and not video.duplicated(["frame", "face"]).any()  # two faces a frame, none twice


def _big_frames(folder: Path, n: int) -> list[str]:
    """n 1280x720 JPEGs with four faces each (about 30 ms of work apiece here)."""
    frames = moving_faces((720, 1280), default_movers(4, (720, 1280), 10.0), 30.0, n)
    paths = []
    for i, (frame, _) in enumerate(frames):
        path = folder / f"frame{i:03d}.jpg"
        Image.fromarray(frame).save(path, quality=85)
        paths.append(str(path))
    return paths


def _busy_actor_pids() -> list[int]:
    """Processes of the actor pool working on a batch (Ray names them by their class and method)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(RayPredictor)).submit" in cmd:
                pids.append(int(entry))
    return pids


def test_a_killed_actor_is_retried_and_no_row_is_lost_or_doubled(local_ray, tmp_path):
    paths = _big_frames(tmp_path, 80)
    done, killed = threading.Event(), []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline and not killed:
            pids = _busy_actor_pids()
            if pids:  # working on a batch: killed mid-batch
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    work = plan([(p, None) for p in paths])
    rows = dataset(work, BatchPredictor("vgg-taper-int8", threads=1), workers=2, threads_per_worker=1,
                   batch_size=2).to_pandas()
    done.set()
    thread.join()
    assert killed, "no actor was killed while the job ran"
    assert list(dict.fromkeys(rows["source"])) == paths  # every image, in order
    assert not rows.duplicated(["source", "face"]).any()
    assert (rows["status"] == "ok").all() and rows.groupby("source").size().eq(4).all()
    np.testing.assert_array_equal(rows["face"].to_numpy(), np.tile(np.arange(4), len(paths)))
