"""fer-bench peer: the figures, the protocol, the orchestration and the error paths.

No fer or TensorFlow is needed: a fake ``fer`` and ``tensorflow`` written into tmp_path stand in for
the peer (the real worker script runs on them under this python), and our own worker is the real one.
No timing is asserted; a bad worker must fail fast and clearly.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fer_bench.peer import (
    PEER_SCRIPT,
    FrameSet,
    PeerError,
    PeerSettings,
    WorkerProcess,
    check_peer_python,
    compose_frames,
    cpu_details,
    host_tag,
    markdown,
    run_peer,
    same_round_ratio,
    wilson_interval,
    write_outputs,
)
from fer_bench.peer_fer_worker import Worker, serve
from fer_bench.scenes import iou

FAKE_FER = '''
import os

import cv2
import numpy as np

NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


class FER:
    """fer 25.10's surface as the worker uses it: the private interpreter attributes, _classify_emotions
    and detect_emotions (class by brightness; one fixed box for frames larger than 100 px)."""

    def __init__(self, offsets=(10, 10)):
        import tensorflow as tf

        self.offsets = offsets
        self.__tflite_interpreter = tf.lite.Interpreter(model_path="fake")
        self.__tflite_interpreter.allocate_tensors()
        self.__tflite_input_details = self.__tflite_interpreter.get_input_details()
        self.__tflite_output_details = self.__tflite_interpreter.get_output_details()

    def _classify_emotions(self, gray_faces):
        if os.environ.get("FAKE_FER_DIE") and len(gray_faces) > 1:
            os._exit(7)
        out = []
        for face in gray_faces:
            self.__tflite_interpreter.set_tensor(0, face[None, :, :, None].astype(np.float32))
            self.__tflite_interpreter.invoke()
            out.append(self.__tflite_interpreter.get_tensor(1)[0])
        return np.array(out)

    def detect_emotions(self, img, face_rectangles=None):
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if face_rectangles is None:
            face_rectangles = [(10, 10, 100, 100)] if gray.shape[0] > 100 else []
        faces = [cv2.resize(gray[y : y + h, x : x + w], (64, 64)) for x, y, w, h in face_rectangles]
        if not faces:
            return []
        scores = self._classify_emotions((np.array(faces, np.float32) / 255.0 - 0.5) * 2.0)
        return [{"box": list(b), "emotions": {n: round(float(v), 2) for n, v in zip(NAMES, s)}}
                for b, s in zip(face_rectangles, scores)]
'''

FAKE_TF = '''
import numpy as np

__version__ = "0-fake"


class _Interpreter:
    def __init__(self, model_path=None, num_threads=None):
        self.num_threads = num_threads

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        return [{"index": 0}]

    def get_output_details(self):
        return [{"index": 1}]

    def set_tensor(self, index, value):
        self._x = value

    def invoke(self):
        k = int((float(self._x.mean()) + 1.0) * 3.49)
        self._y = np.eye(7, dtype=np.float32)[[k]]

    def get_tensor(self, index):
        return self._y


class lite:
    Interpreter = _Interpreter
'''


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def fake_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'peer python': this python with the fake fer and tensorflow on its path, as a venv's would have them."""
    root = tmp_path_factory.mktemp("fake-peer")
    (root / "fer" / "data").mkdir(parents=True)
    (root / "fer" / "__init__.py").write_text('__version__ = "0-fake"\n')
    (root / "fer" / "fer.py").write_text(FAKE_FER)
    (root / "fer" / "data" / "emotion_model_quantized.tflite").write_bytes(b"")
    (root / "tensorflow").mkdir()
    (root / "tensorflow" / "__init__.py").write_text(FAKE_TF)
    return _executable(root / "python", f'#!/bin/sh\nPYTHONPATH="{root}" exec "{sys.executable}" "$@"\n')


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray, FrameSet]:
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (12, 48, 48), dtype=np.uint8)
    return faces, rng.integers(0, 7, 12), compose_frames(faces, per_kind=1)


TINY = PeerSettings(rounds=2, block=3, throughput_rounds=1, frame_rounds=1, timeout_s=120)


def _children() -> set[int]:
    """Live child processes of this test process (Linux), to show that none is left behind."""
    out: set[int] = set()
    for f in Path("/proc/self/task").glob("*/children"):
        out |= {int(p) for p in f.read_text().split()}
    return {p for p in out if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]}


# --- the figures ---------------------------------------------------------------------------------------


def test_wilson_interval():
    assert wilson_interval(50, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)  # never below 0
    assert wilson_interval(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-5)  # nor above 1
    lo, hi = wilson_interval(2500, 3589)
    assert lo < 2500 / 3589 < hi and hi - lo < 0.031
    for bad in ((1, 0), (5, 4), (-1, 4)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_same_round_ratio_pairs_rounds_not_pools():
    ours = [[1, 2, 3], [4, 4, 4], [1, 1, 100]]
    fer = [[2, 4, 6], [8, 8, 8], [1, 1, 1]]
    assert same_round_ratio(ours, fer) == pytest.approx(0.5)  # round medians 2/4, 4/8, 1/1
    with pytest.raises(ValueError):
        same_round_ratio(ours, fer[:2])


def test_host_tag_and_cpu_details():
    assert host_tag("AMD EPYC", ["avx2", "avx512f", "avx512_vnni"]) == "amd-epyc-avx512-vnni"
    assert host_tag("AMD EPYC 7763 64-Core Processor", ["avx2"]) == "amd-epyc-7763-avx2"
    assert host_tag("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", ["avx2", "avx512_vnni"]) == \
        "intel-xeon-platinum-8375c-avx512-vnni"
    assert host_tag("AMD Ryzen 7 7840U w/ Radeon 780M Graphics", ["avx2"]).startswith("amd-ryzen-7-7840u")
    assert host_tag("", []) == "cpu-no-avx2"
    assert host_tag("Intel Core Ultra 7 155H", ["avx2", "avx_vnni"]).endswith("-avx-vnni")
    assert host_tag("Neoverse-N1", ["asimd", "asimddp"]).endswith("-asimddp")
    info = cpu_details("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC\n"
                       "flags\t\t: fpu avx2 avx512f avx512_vnni\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert info["model_name"] == "AMD EPYC" and info["cpu_family"] == "25" and info["vendor_id"] == "AuthenticAMD"
    assert info["has"] == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False, "amx_int8": False,
                           "asimddp": False}
    assert info["flags"] == ["fpu", "avx2", "avx512f", "avx512_vnni"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_peak_rss_is_the_workers_own_not_its_parents():
    ballast = np.ones(200 * 2**20 // 8)  # 200 MB resident here, in the parent
    code = "from fer_bench.peer_fer_worker import peak_rss_mb; print(peak_rss_mb())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert float(done.stdout) < 150 and ballast.sum() > 0  # getrusage's ru_maxrss would report >= 200


def test_composed_frames_hold_their_faces(synthetic):
    frames = compose_frames(synthetic[0], per_kind=2, seed=3)
    assert frames.frames.shape == (4, 480, 640, 3) and frames.frames.dtype == np.uint8
    assert frames.kinds == ["640x480, 1 face"] * 2 + ["640x480, 4 faces"] * 2
    assert [len(t) for t in frames.truths] == [1, 1, 4, 4]
    for truths in frames.truths:
        boxes = [t.box for t in truths]
        assert all(0 <= x and 0 <= y and x + w <= 640 and y + h <= 480 for x, y, w, h in boxes)
        assert all(iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])


# --- the protocol ----------------------------------------------------------------------------------------


class Echo(Worker):
    package = "echo"

    def prepare(self, faces):
        self.calls = []

    def face_call(self, i):
        self.calls.append(i)


def test_serve_answers_every_line_and_reports_failures(tmp_path):
    np.save(tmp_path / "faces.npy", np.zeros((5, 48, 48), np.uint8))
    requests = [{"op": "load", "faces": str(tmp_path / "faces.npy")}, {"op": "time_faces", "start": 3, "count": 4},
                {"op": "load", "faces": str(tmp_path / "missing.npy")}, {"op": "nonsense"}, {"op": "rss"},
                {"op": "quit"}, {"op": "rss"}]
    worker, out = Echo(), io.StringIO()
    serve(worker, io.StringIO("\n".join(json.dumps(r) for r in requests) + "\n\n"), out)
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(answers) == 6  # nothing after quit
    assert answers[0]["faces"] == 5 and answers[0]["package"] == "echo"
    assert len(answers[1]["seconds"]) == 4 and worker.calls == [3, 4, 0, 1]  # faces cycle
    assert "FileNotFoundError" in answers[2]["error"] and "unknown op 'nonsense'" in answers[3]["error"]
    assert answers[4]["peak_rss_mb"] > 0 and answers[5] == {"ok": True}


def test_orchestration_with_the_fake_peer(fake_peer, synthetic, tmp_path):
    faces, labels, frames = synthetic
    result = run_peer(faces, labels, frames, [str(fake_peer), str(PEER_SCRIPT)], TINY)
    names = ["fer @ 1 thread", "vgg-taper-int8 @ 1 thread", "fer @ default threads", "vgg-taper-int8 @ default threads"]
    assert list(result["workers"]) == names
    assert result["workers"]["fer @ 1 thread"]["versions"]["fer"] == "0-fake"
    assert "num_threads=1" in result["workers"]["fer @ 1 thread"]["interpreter"]
    for mode in ("end_to_end", "model"):
        lat = result["latency"][mode]
        assert set(lat["contenders"]) == set(names)
        assert all(len(c["round_medians_ms"]) == 2 and c["runs"] == 6 for c in lat["contenders"].values())
        assert set(lat["ours_over_fer"]) == {"vgg-taper-int8 @ 1 thread / fer @ 1 thread",
                                             "vgg-taper-int8 @ default threads / fer @ default threads"}
    fer_thr = result["throughput"]["contenders"]["fer @ default threads"]
    assert len(fer_thr["ways"]) == 2 and fer_thr["best"] in fer_thr["ways"]
    acc = result["accuracy"]
    assert set(acc) == {"fer", "vgg-taper-int8"} and len(acc["fer"]["ways"]) == 4
    assert acc["fer"]["accuracy"] == max(w["accuracy"] for w in acc["fer"]["ways"].values())  # the best way quoted
    one = result["frames"]["640x480, 1 face"]["contenders"]["fer @ 1 thread"]
    assert one["faces"] == 1 and one["found"] == 1 and one["true_positives"] + one["false_positives"] == 1
    result = {"command": "fer-bench peer --test", "environment": {"cpu": "Test CPU", "cpu_flags": [], "logical_cpus": 2,
              "cpu_details": {"has": {"avx2": False}, "flags": ["fpu"]}}, **result}
    paths = write_outputs(result, tmp_path / "out")
    assert [p.name for p in paths] == ["peer.json", "peer.md", "peer.png"] and all(p.stat().st_size for p in paths)
    table = markdown(result)
    assert "| per face, end to end: p50 (p90) ms, 1 thread |" in table and "`fer-bench peer --test`" in table
    assert "fer 0-fake with tensorflow 0-fake" in table and "avx2 no" in table
    assert json.loads(paths[0].read_text())["latency"]["model"]["contenders"][names[0]]["round_medians_ms"]


# --- the error paths -------------------------------------------------------------------------------------


def _worker(tmp_path: Path, code: str, timeout_s: float = 30) -> WorkerProcess:
    return WorkerProcess("test", [sys.executable, "-c", code], tmp_path / "w.log", timeout_s)


def test_missing_peer_python_is_a_clear_error(tmp_path):
    with pytest.raises(PeerError, match="no such executable; make one with: python -m venv"):
        check_peer_python(tmp_path / "no-python")
    with pytest.raises(PeerError, match="cannot start worker"):
        WorkerProcess("fer", [str(tmp_path / "no-python")], tmp_path / "w.log", 5)


def test_a_worker_that_exits_early(tmp_path):
    code = "import sys; sys.stderr.write(\"Traceback\\nModuleNotFoundError: No module named 'fer'\\n\"); sys.exit(3)"
    w = _worker(tmp_path, code)
    with pytest.raises(PeerError, match=r"code 3 before answering 'load'.*No module named 'fer'.*pip install fer"):
        w.ask("load", faces="x.npy")
    w.close()


def test_a_worker_that_answers_garbage(tmp_path):
    w = _worker(tmp_path, "import sys\nfor line in sys.stdin:\n    print('hello there', flush=True)")
    with pytest.raises(PeerError, match="answered 'rss' with garbage: 'hello there'"):
        w.ask("rss")
    assert w.proc.poll() is not None  # killed, not left talking
    w.close()


def test_a_worker_that_stalls_is_killed_not_waited_for(tmp_path):
    w = _worker(tmp_path, "import time; time.sleep(120)", timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="did not answer 'load' within 1 s"):
        w.ask("load", faces="x.npy")
    assert time.monotonic() - t0 < 20 and w.proc.poll() is not None
    w.close()


def test_a_worker_error_answer_names_the_request(tmp_path):
    answer = json.dumps({"error": "ValueError: no frames"})
    w = _worker(tmp_path, f"import sys\nfor line in sys.stdin:\n    print({answer!r}, flush=True)")
    with pytest.raises(PeerError, match="worker test failed on 'frames': ValueError: no frames"):
        w.ask("frames")
    w.close()


def test_a_peer_dying_mid_run_stops_the_run_and_every_worker(fake_peer, synthetic, tmp_path):
    dying = _executable(tmp_path / "dying-python", f'#!/bin/sh\nFAKE_FER_DIE=1 exec "{fake_peer}" "$@"\n')
    before = _children()
    died = r"worker fer @ (1 thread|default threads) exited with code 7 before answering 'throughput'"
    with pytest.raises(PeerError, match=died):
        run_peer(*synthetic, [str(dying), str(PEER_SCRIPT)], TINY)
    assert _children() <= before


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_bench", "peer", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def test_command_refuses_without_a_peer_python(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FER_PEER_PYTHON"}
    done = _cli(env=env)
    assert done.returncode == 2 and "no peer python: pass --peer-python or set FER_PEER_PYTHON" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = _cli("--peer-python", str(tmp_path / "nope"), env=env)
    assert done.returncode == 2 and "no such executable" in done.stderr
    done = _cli("--help", env=env)
    assert done.returncode == 0 and "--no-deps" in done.stdout and "interleaved" in done.stdout


@pytest.mark.data
def test_command_quick_run_with_the_fake_peer(fake_peer, fer_path, tmp_path):
    done = _cli("--quick", "--peer-python", str(fake_peer), "--data", str(fer_path), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "peer: starting fer @ 1 thread" in done.stderr
    result = json.loads((tmp_path / "peer.json").read_text())
    assert result["settings"]["faces"] == 48 and result["host_tag"] and "cpu_details" in result["environment"]
    assert (tmp_path / "peer.md").read_text().startswith("# fer-edge vs fer")
