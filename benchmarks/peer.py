"""``fer-bench peer``: fer-edge against the popular PyPI package ``fer`` on the same faces and frames.

Each package runs in its own worker process (ours: ``python -m fer_bench.peer --worker ours``; fer:
``benchmarks/peer_fer_worker.py`` under the peer's own python, a virtual environment that has fer
and TensorFlow), one per thread setting, so neither's threads, allocator or import cost touch the
other's figures, and fer is never a dependency of ours. The orchestrator here writes the faces and
frames as ``.npy`` files, speaks the JSON-lines protocol of :mod:`fer_bench.peer_fer_worker` with
every read bounded by a timeout, and interleaves small timing blocks of all the workers round by
round in a fresh random order, so the machine's drift lands on every contender alike; ratios are
medians of same-round ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fer_bench.peer_fer_worker import Worker, cold_start, parse_threads, peak_rss_mb, protocol_streams, serve
from fer_bench.stats import interleaved, paired_ratio, percentiles
from fer_runtime.precision import FAST_INT8_FLAGS

PEER_SCRIPT = Path(__file__).with_name("peer_fer_worker.py")
PEER_ENV = "FER_PEER_PYTHON"
PEER_INSTALL = "python -m venv peer && peer/bin/pip install fer tensorflow-cpu 'opencv-contrib-python<5'"
THREAD_SETTINGS = ("1", "default")
# The ISA extensions that decide int8 and fp32 convolution speed (ORT's and XNNPACK's kernels alike).
KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
FRAME_SIZE = (480, 640)
FRAME_KINDS = {"640x480, 1 face": 1, "640x480, 4 faces": 4}
IOU_MATCH = 0.5

Progress = Callable[[str], None]


class PeerError(RuntimeError):
    """A worker that cannot start, dies, stalls or answers garbage; the text says which one and why."""


# --- small, tested figures ---------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96): unlike the normal approximation
    it stays within [0, 1] and keeps its coverage near 0 and 1 and for small samples (a --quick run)."""
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got {correct}/{n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def round_medians(rounds: Sequence[Sequence[float]]) -> list[float]:
    """The median of each round's block of timings."""
    return [float(statistics.median(r)) for r in rounds]


def same_round_ratio(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]]) -> float:
    """Median over rounds of (numerator's median / denominator's median) in the same round: a round's
    two blocks ran back to back, so what the machine did then cancels out of their ratio."""
    return paired_ratio(round_medians(numerator), round_medians(denominator))


def host_tag(cpu: str, flags: Sequence[str]) -> str:
    """A folder name for results from this kind of machine: the CPU model's first words and the
    widest int8 extension, e.g. 'AMD EPYC' with avx512_vnni -> 'amd-epyc-avx512-vnni'."""
    name = re.sub(r"\((r|tm)\)", " ", cpu, flags=re.IGNORECASE)
    name = re.sub(r"@.*$|\bwith\b.*$", " ", name, flags=re.IGNORECASE)
    name = re.sub(r"\b\d+-core\b|\bcpu\b|\bprocessor\b", " ", name, flags=re.IGNORECASE)
    words = re.findall(r"[a-z0-9]+", name.lower())[:4] or ["cpu"]
    fast = next((f for f in FAST_INT8_FLAGS if f in flags), None)  # the runtime's own list of fast-int8 flags
    isa = fast.replace("_", "-") if fast else "avx2" if "avx2" in flags else "no-avx2"
    return "-".join([*words, isa])


def cpu_details(cpuinfo: str | None = None) -> dict[str, Any]:
    """The first processor of /proc/cpuinfo: its identity, its whole flag list, and which of
    :data:`KEY_FLAGS` it has (``fer_bench.env`` lists only the flags present)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    block = cpuinfo.strip().split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in block.splitlines() if ":" in ln)}
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {"model_name": fields.get("model name") or platform.processor() or platform.machine(),
            **{key.replace(" ", "_"): fields[key] for key in ("vendor_id", "cpu family", "model", "stepping",
                                                              "microcode") if key in fields},
            "has": {f: f in flags for f in KEY_FLAGS}, "flags": flags}


# --- faces and frames ----------------------------------------------------------------------------------


def public_test(data: Path | None, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` (0: all 3,589) PublicTest faces of FER2013, (N, 48, 48) uint8, and their labels."""
    from fer_train.data import load_fer2013

    part = load_fer2013(data).split("PublicTest")
    n = limit or len(part.labels)
    return part.images[:n], part.labels[:n]


@dataclass(frozen=True)
class FrameSet:
    """Composed frames (F, H, W, 3) uint8 RGB, the true face boxes of each, and each frame's kind."""

    frames: np.ndarray
    truths: list[list[Any]]
    kinds: list[str]


def _cells(size: tuple[int, int], count: int) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) of ``count`` equal cells of a frame, so that faces pasted one per cell never overlap."""
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    h, w = size[0] // rows, size[1] // cols
    return [(r * h, c * w, h, w) for r in range(rows) for c in range(cols)][:count]


def compose_frames(faces: np.ndarray, per_kind: int, seed: int = 0) -> FrameSet:
    """``per_kind`` frames of each of :data:`FRAME_KINDS`: FER2013 faces pasted upright (fer's Haar
    cascade finds upright faces only) into textured 640x480 scenes, one face 80-200 px wide, or four
    of 72-160 px each in its own quarter of the frame."""
    from fer_bench.scenes import Truth, background, paste_fer_face

    rng = np.random.default_rng(seed)
    frames, truths, kinds, k = [], [], [], 0
    for kind, count in FRAME_KINDS.items():
        low, high = (80, 200) if count == 1 else (72, 160)
        for _ in range(per_kind):
            frame = background(*FRAME_SIZE, rng)
            boxes = []
            for y0, x0, h, w in _cells(FRAME_SIZE, count):
                cell = frame[y0 : y0 + h, x0 : x0 + w].copy()
                side = int(rng.integers(low, min(high, h, w) + 1))
                t = paste_fer_face(faces[k % len(faces)], side, 0.0, cell, rng)
                frame[y0 : y0 + h, x0 : x0 + w] = cell
                boxes.append(Truth(t.cx + x0, t.cy + y0, t.w, t.h))
                k += 1
            frames.append(frame)
            truths.append(boxes)
            kinds.append(kind)
    return FrameSet(np.stack(frames), truths, kinds)


# --- our worker ------------------------------------------------------------------------------------------


class OursWorker(Worker):
    """fer-edge's ``EmotionRecognizer`` behind the protocol: ``predict_proba`` per face, the session
    alone on a preprocessed (1, 1, 48, 48) batch, ``predict_proba`` on the whole stack, ``detect``."""

    package = "fer-edge"

    def __init__(self, model: str, threads: int | None, spawned_at: float | None) -> None:
        super().__init__()
        t0 = time.perf_counter()
        import onnxruntime

        from fer_runtime import EmotionRecognizer, __version__

        import_s = time.perf_counter() - t0
        self.rec = EmotionRecognizer(model, threads=threads, precision="named")  # the file named, on every CPU
        _ = self.rec.pipeline  # the detector too, as FER() loads its cascade when made
        self.rec.predict_proba(np.full((48, 48), 128, np.uint8))
        first = time.time()
        self.startup = {"import_s": import_s, "cold_start_s": cold_start(spawned_at, first), "model": model,
                        "file": self.rec.info.source, "precision": self.rec.info.precision,
                        "threads": "ONNX Runtime's default (one per core)" if threads is None else threads,
                        "startup_peak_rss_mb": peak_rss_mb(),
                        "versions": {"fer-edge": __version__, "onnxruntime": onnxruntime.__version__,
                                     "numpy": np.__version__, "python": platform.python_version()}}

    def prepare(self, faces: np.ndarray) -> None:
        self.faces = faces
        self.batch = self.rec.preprocess(faces)

    def face_call(self, i: int) -> Any:
        return self.rec.predict_proba(self.faces[i])

    def model_call(self, i: int) -> Any:
        return self.rec.probabilities(self.batch[i : i + 1])

    def throughput_calls(self) -> dict[str, Callable[[], Any]]:
        return {"predict_proba on the stack": lambda: self.rec.predict_proba(self.faces)}

    def labels(self) -> dict[str, list[int]]:
        return {"predict_proba": self.rec.predict_proba(self.faces).argmax(1).tolist()}

    def find_faces(self, rgb: np.ndarray) -> Callable[[], list[list[float]]]:
        return lambda: [[float(v) for v in face.box] for face in self.rec.detect(rgb)]


def worker_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_bench.peer",
                                     description="fer-edge behind fer-bench peer's JSON-lines protocol.")
    parser.add_argument("--worker", choices=["ours"], required=True)
    parser.add_argument("--model", default="vgg-taper-int8")
    parser.add_argument("--threads", default="default", help="'1' or 'default' (ONNX Runtime's own).")
    parser.add_argument("--spawned-at", type=float, default=None, help="time.time() just before the launch.")
    args = parser.parse_args(argv)
    requests, answers = protocol_streams()
    serve(OursWorker(args.model, parse_threads(args.threads), args.spawned_at), requests, answers)


# --- worker processes ------------------------------------------------------------------------------------


class WorkerProcess:
    """One worker: a request line in, an answer line out. Every read waits at most ``timeout_s`` (a
    reader thread feeds a queue), so a worker that stalls, dies or babbles is a :class:`PeerError`,
    never a hang; its stderr goes to ``log`` (a file: a full pipe would stall it) for the message."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, timeout_s: float,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.log, self.timeout_s = name, log, timeout_s
        try:
            with open(log, "ab") as err:
                self.proc = subprocess.Popen([*argv, "--spawned-at", repr(time.time())], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1, env=env)
        except OSError as exc:
            raise PeerError(f"cannot start worker {name} ({argv[0]}): {exc.strerror or exc}") from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def ask(self, op: str, timeout_s: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one request and return its answer (a dict), or raise :class:`PeerError`."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            raise self._died(op) from None
        limit = timeout_s or self.timeout_s
        try:
            line = self._lines.get(timeout=limit)
        except queue.Empty:
            self.kill()
            raise PeerError(f"worker {self.name} did not answer {op!r} within {limit:g} s"
                            f"{self._last_words()}") from None
        if line is None:
            raise self._died(op)
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self.kill()
            raise PeerError(f"worker {self.name} answered {op!r} with garbage: {line.strip()[:120]!r}"
                            f"{self._last_words()}")
        if "error" in answer:
            raise PeerError(f"worker {self.name} failed on {op!r}: {answer['error']}")
        return answer

    def _died(self, op: str) -> PeerError:
        try:
            code: int | str = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = "?"
        return PeerError(f"worker {self.name} exited with code {code} before answering {op!r}{self._last_words()}")

    def _last_words(self) -> str:
        """The last line of the worker's stderr (where a traceback states its reason), with a hint when
        the peer's python lacks a package."""
        try:
            lines = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        if not lines:
            return ""
        hint = f"; install the peer with: {PEER_INSTALL}" if "No module named" in lines[-1] else ""
        return f" (its stderr ends: {lines[-1][:300]}){hint}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Ask the worker to quit, end its input (a worker that ignored quit reads EOF), give it a few
        seconds, then make sure it is gone."""
        if self.proc.poll() is None:
            try:
                self.ask("quit", timeout_s=10)
            except PeerError:
                pass
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:  # a worker that already died leaves a broken pipe to flush
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        self._reader.join(5)  # it ends at the dead worker's EOF; only then is its stream closed under it
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def check_peer_python(path: Path) -> None:
    """PeerError unless ``path`` is an executable file (before any worker is started)."""
    if not path.is_file() or not os.access(path, os.X_OK):
        raise PeerError(f"--peer-python {path}: no such executable; make one with: {PEER_INSTALL}")


# --- the run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerSettings:
    """How much of everything one run measures (``quick()``: tiny, for smoke runs)."""

    models: tuple[str, ...] = ("vgg-taper-int8",)
    rounds: int = 40
    block: int = 50
    throughput_rounds: int = 3
    frame_rounds: int = 5
    timeout_s: float = 300.0
    seed: int = 0

    def quick(self) -> PeerSettings:
        return replace(self, rounds=min(self.rounds, 3), block=min(self.block, 8), throughput_rounds=1, frame_rounds=1)


@dataclass(frozen=True)
class Contender:
    """One worker: a package (ours: one of our models) at one thread setting."""

    package: str  # "fer-edge" or "fer"
    label: str  # our model's name, or "fer"
    threads: str  # "1" or "default"

    @property
    def name(self) -> str:
        return f"{self.label} @ {'1 thread' if self.threads == '1' else 'default threads'}"

    def argv(self, peer_command: Sequence[str]) -> list[str]:
        if self.package == "fer":
            return [*peer_command, "--threads", self.threads]
        return [sys.executable, "-m", "fer_bench.peer", "--worker", "ours", "--model", self.label,
                "--threads", self.threads]


def contenders(models: Sequence[str]) -> list[Contender]:
    """fer and each of our models at each thread setting, in the order they start: per setting fer
    first, then ours (each package's first worker meets a colder page cache than its second)."""
    return [c for t in THREAD_SETTINGS
            for c in [Contender("fer", "fer", t), *(Contender("fer-edge", m, t) for m in models)]]


def start_workers(cast: Sequence[Contender], peer_command: Sequence[str], folder: Path, files: dict[str, str],
                  timeout_s: float, progress: Progress) -> tuple[dict[str, WorkerProcess], dict[str, Any]]:
    """Start the workers one after another (each one's cold start alone on the machine) and load the
    faces and frames into each; the workers and their load answers, by name."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    workers: dict[str, WorkerProcess] = {}
    loaded: dict[str, Any] = {}
    try:
        for k, c in enumerate(cast):
            progress(f"peer: starting {c.name}")
            workers[c.name] = WorkerProcess(c.name, c.argv(peer_command), folder / f"worker-{k}.log", timeout_s, env)
            loaded[c.name] = workers[c.name].ask("load", **files)
    except BaseException:
        close_all(workers)
        raise
    return workers, loaded


def close_all(workers: dict[str, WorkerProcess]) -> None:
    for w in workers.values():
        w.close()


def time_latency(workers: dict[str, WorkerProcess], mode: str, n: int, s: PeerSettings, rng: np.random.Generator,
                 progress: Progress) -> dict[str, list[list[float]]]:
    """Per-face seconds, one block of ``s.block`` calls per worker and round; round r's block starts at
    face r * block for every worker, so the same faces meet in a round. After one untimed block each."""
    for w in workers.values():
        w.ask("time_faces", start=0, count=s.block, mode=mode)
    per_round: dict[str, list[list[float]]] = {name: [] for name in workers}
    last = -1
    for r, name in interleaved(list(workers), s.rounds, rng):
        if r != last and r % 10 == 0:
            progress(f"peer: per-face latency ({mode.replace('_', ' ')}), round {r + 1}/{s.rounds}")
        last = r
        answer = workers[name].ask("time_faces", start=(r * s.block) % n, count=s.block, mode=mode)
        per_round[name].append(answer["seconds"])
    return per_round


def latency_summary(per_round: list[list[float]]) -> dict[str, Any]:
    flat = [t for block in per_round for t in block]
    return {**percentiles(flat), "round_medians_ms": [1e3 * m for m in round_medians(per_round)]}


def paired(cast: Sequence[Contender]) -> list[tuple[Contender, Contender]]:
    """(ours, fer) at the same thread setting, for every model of ours."""
    fer = {c.threads: c for c in cast if c.package == "fer"}
    return [(c, fer[c.threads]) for c in cast if c.package != "fer"]


def measure_latency(workers: dict[str, WorkerProcess], cast: Sequence[Contender], n: int, s: PeerSettings,
                    rng: np.random.Generator, progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("end_to_end", "model"):
        per_round = time_latency(workers, mode, n, s, rng, progress)
        out[mode] = {"contenders": {name: latency_summary(r) for name, r in per_round.items()},
                     "ours_over_fer": {f"{o.name} / {f.name}": same_round_ratio(per_round[o.name], per_round[f.name])
                                       for o, f in paired(cast)}}
    return out


def measure_throughput(workers: dict[str, WorkerProcess], cast: Sequence[Contender], n: int, s: PeerSettings,
                       rng: np.random.Generator, progress: Progress) -> dict[str, Any]:
    """Faces/s over all the faces per way of classifying them; each contender's fastest way quoted."""
    for w in workers.values():
        w.ask("throughput")  # untimed: the first batch of a size allocates its buffers
    seconds: dict[str, list[dict[str, float]]] = {name: [] for name in workers}
    for r, name in interleaved(list(workers), s.throughput_rounds, rng):
        progress(f"peer: throughput, round {r + 1}/{s.throughput_rounds}, {name}")
        seconds[name].append(workers[name].ask("throughput")["seconds"])
    rows: dict[str, Any] = {}
    best_rate: dict[str, list[float]] = {}
    for name, rounds in seconds.items():
        ways = {way: [n / r[way] for r in rounds] for way in rounds[0]}
        medians = {way: float(statistics.median(v)) for way, v in ways.items()}
        best = max(medians, key=lambda way: medians[way])
        best_rate[name] = ways[best]
        rows[name] = {"faces": n, "best": best, "faces_per_s": medians[best],
                      "ways": {way: {"faces_per_s": medians[way], "per_round_faces_per_s": v}
                               for way, v in ways.items()}}
    ratios = {f"{o.name} / {f.name}": paired_ratio(best_rate[o.name], best_rate[f.name]) for o, f in paired(cast)}
    return {"contenders": rows, "ours_over_fer": ratios}


def accuracy_of(predicted: Sequence[int], labels: np.ndarray) -> dict[str, Any]:
    correct = int((np.asarray(predicted) == labels).sum())
    lo, hi = wilson_interval(correct, len(labels))
    return {"correct": correct, "faces": len(labels), "accuracy": correct / len(labels), "ci95": [lo, hi]}


def measure_accuracy(workers: dict[str, WorkerProcess], cast: Sequence[Contender], labels: np.ndarray,
                     progress: Progress) -> dict[str, Any]:
    """Accuracy per package and way of asking (the default-thread workers; labels do not depend on
    threads), each package's best way quoted: for fer, generous to the peer."""
    out: dict[str, Any] = {}
    for c in cast:
        if c.threads != "default":
            continue
        progress(f"peer: accuracy, {c.label}")
        got = workers[c.name].ask("predict")["labels"]
        ways = {way: accuracy_of(v, labels) for way, v in got.items() if len(v) == len(labels)}
        if len(ways) != len(got):
            raise PeerError(f"worker {c.name} labelled a different number of faces than the {len(labels)} it was given")
        best = max(ways, key=lambda way: ways[way]["accuracy"])
        out[c.label] = {"best": best, **ways[best], "ways": ways}
    return out


def found_faces(boxes: Sequence[Sequence[Sequence[float]]], frames: FrameSet, kind: str) -> dict[str, int]:
    """True faces, faces found, true and false positives (IoU >= 0.5, greedy) over the frames of ``kind``."""
    from fer_bench.scenes import match

    faces = found = tp = fp = 0
    for k, frame_kind in enumerate(frames.kinds):
        if frame_kind != kind:
            continue
        owner, false_pos = match([tuple(b) for b in boxes[k]], frames.truths[k], threshold=IOU_MATCH)  # type: ignore[misc]
        faces += len(frames.truths[k])
        found += len(boxes[k])
        tp += sum(o is not None for o in owner)
        fp += false_pos
    return {"faces": faces, "found": found, "true_positives": tp, "false_positives": fp}


def measure_frames(workers: dict[str, WorkerProcess], cast: Sequence[Contender], frames: FrameSet, s: PeerSettings,
                   rng: np.random.Generator, progress: Progress) -> dict[str, Any]:
    """Whole-frame time (find, crop, classify every face) and the faces found, per frame kind."""
    for w in workers.values():
        w.ask("frames")  # untimed: first calls make detectors and buffers
    seconds: dict[str, list[list[float]]] = {name: [] for name in workers}
    boxes: dict[str, Any] = {}
    for r, name in interleaved(list(workers), s.frame_rounds, rng):
        progress(f"peer: whole frames, round {r + 1}/{s.frame_rounds}, {name}")
        answer = workers[name].ask("frames")
        seconds[name].append(answer["seconds"])
        boxes[name] = answer["boxes"]
    out: dict[str, Any] = {}
    for kind in FRAME_KINDS:
        idx = [k for k, fk in enumerate(frames.kinds) if fk == kind]
        if not idx:
            continue
        per_round = {name: [[r[k] for k in idx] for r in rounds] for name, rounds in seconds.items()}
        out[kind] = {"frames": len(idx),
                     "contenders": {name: {**latency_summary(per_round[name]), **found_faces(boxes[name], frames, kind)}
                                    for name in workers},
                     "ours_over_fer": {f"{o.name} / {f.name}": same_round_ratio(per_round[o.name], per_round[f.name])
                                       for o, f in paired(cast)}}
    return out


def run_peer(faces: np.ndarray, labels: np.ndarray, frames: FrameSet, peer_command: Sequence[str],
             settings: PeerSettings = PeerSettings(), progress: Progress = lambda _: None) -> dict[str, Any]:
    """Everything ``fer-bench peer`` measures, as one dict (raw per-round medians included).

    ``faces``: (N, 48, 48) uint8 grey; ``labels``: their classes (0-6, the same order in both
    packages); ``peer_command``: how to start fer's worker (its python and the worker script)."""
    if faces.dtype != np.uint8 or faces.ndim != 3 or len(faces) != len(labels) or not len(faces):
        raise ValueError("faces must be a non-empty (N, H, W) uint8 stack with one label each")
    cast = contenders(settings.models)
    rng = np.random.default_rng(settings.seed)
    with tempfile.TemporaryDirectory(prefix="fer-peer-") as tmp:
        folder = Path(tmp)
        files = {"faces": str(folder / "faces.npy"), "frames": str(folder / "frames.npy")}
        np.save(files["faces"], np.ascontiguousarray(faces))
        np.save(files["frames"], frames.frames)
        workers, loaded = start_workers(cast, peer_command, folder, files, settings.timeout_s, progress)
        try:
            result: dict[str, Any] = {
                "settings": {**asdict(settings), "models": list(settings.models), "faces": len(faces),
                             "frames_per_kind": {k: frames.kinds.count(k) for k in FRAME_KINDS}},
                "latency": measure_latency(workers, cast, len(faces), settings, rng, progress),
                "throughput": measure_throughput(workers, cast, len(faces), settings, rng, progress),
                "accuracy": measure_accuracy(workers, cast, labels, progress),
                "frames": measure_frames(workers, cast, frames, settings, rng, progress),
            }
            rss = {name: w.ask("rss") for name, w in workers.items()}
        finally:
            close_all(workers)
    result["workers"] = {c.name: {"package": c.package, "label": c.label, "threads_setting": c.threads,
                                  **loaded[c.name], "run_peak_rss_mb": rss[c.name]["peak_rss_mb"],
                                  "run_ru_maxrss_mb": rss[c.name]["ru_maxrss_mb"],
                                  "os_threads_at_end": rss[c.name]["os_threads"]} for c in cast}
    return result


def peer_environment() -> dict[str, Any]:
    """``fer_bench.env.environment()`` with the full CPU identity and flag list."""
    from fer_bench.env import environment

    return {**environment(), "cpu_details": cpu_details()}


def env_host_tag(env: dict[str, Any]) -> str:
    """:func:`host_tag` of a :func:`peer_environment`."""
    return host_tag(env["cpu"], env.get("cpu_details", {}).get("flags", env["cpu_flags"]))


def default_out_dir(env: dict[str, Any]) -> Path:
    from fer_bench.checkout import checkout_path

    return checkout_path("benchmarks", "results") / "peer" / env_host_tag(env)


# --- the report ------------------------------------------------------------------------------------------


def _name(label: str, threads: str) -> str:
    return Contender("", label, threads).name


def _pair(model: str, threads: str) -> str:
    return f"{_name(model, threads)} / {_name('fer', threads)}"


def _models(result: dict[str, Any]) -> list[str]:
    return list(result["settings"]["models"])


# Table cells: each takes its part of the result first (bound with functools.partial), then who and threads.
def _p50_p90(rows: dict[str, Any], who: str, threads: str) -> str:
    row = rows[_name(who, threads)]
    return f"{row['p50_ms']:.2f} ({row['p90_ms']:.2f})"


def _rate(rows: dict[str, Any], who: str, threads: str) -> str:
    return f"{rows[_name(who, threads)]['faces_per_s']:,.0f}"


def _ratio(ratios: dict[str, float], model: str, threads: str) -> str:
    return f"{ratios[_pair(model, threads)]:.2f}"


def _worker_value(workers: dict[str, Any], key: str, fmt: str, who: str, threads: str) -> str:
    return fmt.format(workers[_name(who, threads)][key])


def _worker_ratio(workers: dict[str, Any], key: str, model: str, threads: str) -> str:
    return f"{workers[_name(model, threads)][key] / workers[_name('fer', threads)][key]:.2f}"


def _accuracy(a: dict[str, Any]) -> str:
    return f"{a['accuracy']:.2%} ({a['ci95'][0]:.1%}-{a['ci95'][1]:.1%})"


def _found(rows: dict[str, Any], who: str) -> str:
    row = rows[_name(who, "default")]
    return f"{row['true_positives']}/{row['faces']} found, {row['false_positives']} false"


Cell = Callable[[str, str], str]


def _per_threads(measure: str, models: Sequence[str], cell: Cell, ratio: Cell) -> list[tuple[str, list[str]]]:
    """One row per thread setting: fer's cell, then each model's cell and its ratio to fer."""
    label = {"1": "1 thread", "default": "default threads"}
    return [(f"{measure}, {label[t]}", [cell("fer", t), *[v for m in models for v in (cell(m, t), ratio(m, t))]])
            for t in THREAD_SETTINGS]


def _table_rows(result: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(measure, [fer, then per model: ours, ours / fer]) for every row of the table."""
    models, rows = _models(result), []
    for mode, what in (("end_to_end", "per face, end to end"), ("model", "per face, model only")):
        lat = result["latency"][mode]
        rows += _per_threads(f"{what}: p50 (p90) ms", models, partial(_p50_p90, lat["contenders"]),
                             partial(_ratio, lat["ours_over_fer"]))
    thr = result["throughput"]
    rows += _per_threads("throughput, all faces: faces/s", models, partial(_rate, thr["contenders"]),
                         partial(_ratio, thr["ours_over_fer"]))
    acc = result["accuracy"]
    points = {m: 100 * (acc[m]["accuracy"] - acc["fer"]["accuracy"]) for m in models}
    gain = [v for m in models for v in (_accuracy(acc[m]), f"{points[m]:+.1f} pts")]
    rows.append((f"accuracy, {acc['fer']['faces']:,} PublicTest faces (95% CI)", [_accuracy(acc["fer"]), *gain]))
    for kind, part in result["frames"].items():
        con = part["contenders"]
        rows += _per_threads(f"whole frame {kind}: p50 (p90) ms", models, partial(_p50_p90, con),
                             partial(_ratio, part["ours_over_fer"]))
        rows.append((f"whole frame {kind}: faces found (IoU >= {IOU_MATCH})",
                     [_found(con, "fer"), *[v for m in models for v in (_found(con, m), "")]]))
    wk = result["workers"]
    for key, what, fmt in (("cold_start_s", "cold start to the first prediction: s", "{:.2f}"),
                           ("import_s", "import of the package: s", "{:.2f}"),
                           ("startup_peak_rss_mb", "peak RSS after the first prediction: MB", "{:.0f}")):
        rows += _per_threads(what, models, partial(_worker_value, wk, key, fmt), partial(_worker_ratio, wk, key))
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The run as Markdown: machine and command once at the top, one row per measure, then how each
    package was asked."""
    env, s, wk = result["environment"], result["settings"], result["workers"]
    d = env.get("cpu_details", {})
    fer_v = wk[_name("fer", "default")]["versions"]
    ours_v = wk[_name(_models(result)[0], "default")]["versions"]
    has = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in d.get("has", {}).items())
    ident = ", ".join(f"{k.replace('_', ' ')} {d[k]}" for k in ("vendor_id", "cpu_family", "model", "stepping")
                      if k in d)
    lines = ["# fer-edge vs fer (PyPI)", "",
             f"Command: `{result['command']}`  ",
             f"CPU: {env['cpu']} ({ident}), {env['logical_cpus']} logical CPUs; {has}  ",
             f"CPU flags: {' '.join(d.get('flags', env['cpu_flags']))}  ",
             (f"fer-edge {ours_v['fer-edge']} with onnxruntime {ours_v['onnxruntime']}, numpy {ours_v['numpy']}, "
              f"Python {ours_v['python']}; fer {fer_v['fer']} with tensorflow {fer_v['tensorflow']}, OpenCV "
              f"{fer_v['opencv']}, numpy {fer_v['numpy']}, Python {fer_v['python']} (its own virtual environment)"), "",
             (f"{s['faces']:,} PublicTest faces of FER2013 (48x48 grey; fer gets the same face as BGR with its box "
              f"(0, 0, 48, 48)). Every package and thread setting in its own worker process, started one after "
              f"another; timings in {s['rounds']} rounds of one {s['block']}-call block per worker, in a fresh random "
              f"order each round; ratios are ours / fer, the median of same-round ratios (below 1: ours takes less; "
              f"throughput: above 1: ours does more)."), ""]
    models = _models(result)
    head = ["measure", "fer", *[v for m in models for v in (f"`{m}`", f"`{m}` / fer")]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [f"| {measure} | " + " | ".join(cells) + " |" for measure, cells in _table_rows(result)]
    lines += ["", *_notes(result)]
    return "\n".join(lines) + "\n"


def _notes(result: dict[str, Any]) -> list[str]:
    acc, thr, wk = result["accuracy"], result["throughput"]["contenders"], result["workers"]
    fer_ways = "; ".join(f"{way}: {a['accuracy']:.2%}" for way, a in acc["fer"]["ways"].items())
    fer_thr = "; ".join(f"{way}: {v['faces_per_s']:,.0f} faces/s"
                        for way, v in thr[_name("fer", "default")]["ways"].items())
    threads = "; ".join(f"{name}: {w['os_threads']} OS threads after loading" for name, w in wk.items())
    return [
        "How each package was asked:", "",
        ("- fer, per face: `FER().detect_emotions(bgr_face, face_rectangles=[(0, 0, 48, 48)])` (pads 40 px, crops "
         "with its offsets, resizes to 64x64, scales to [-1, 1], runs the TFLite interpreter, rounds the scores); "
         "ours: `EmotionRecognizer(model, precision=\"named\").predict_proba(face)` on the 48x48 grey uint8 face "
         "(its shortest path; fer's API takes only 3-channel images, so it gets the same face as BGR and converts "
         "it back to grey itself)."),
        ("- Model only: fer's interpreter `set_tensor` + `invoke` + `get_tensor` on a preprocessed (1, 64, 64, 1) "
         "face; ours: `recognizer.probabilities(batch)` (the ONNX Runtime session and softmax) on a preprocessed "
         "(1, 1, 48, 48) batch."),
        ("- 1 thread: fer's interpreter replaced by `tf.lite.Interpreter(model_path, num_threads=1)` (FER has no "
         "thread option; its private `_FER__tflite_interpreter` and input/output details are swapped) and "
         "`cv2.setNumThreads(1)`; ours: `threads=1`. Default: FER as it makes itself (TensorFlow's and OpenCV's "
         "defaults), ours `threads=None` (one ONNX Runtime thread per core)."),
        f"- Throughput: each package's fastest way quoted. fer: {fer_thr}. Ours: one `predict_proba` on the stack.",
        f"- Accuracy: fer's best way quoted (generous to the peer): {fer_ways}. Ours: argmax of `predict_proba`.",
        ("- Whole frames: RGB 640x480 scenes with FER2013 faces pasted upright at known boxes; fer: "
         "`detect_emotions(bgr_frame)` (its Haar cascade), ours: `detect(rgb_frame)` (YuNet); a face is found "
         f"when a box overlaps its truth with IoU >= {IOU_MATCH}."),
        ("- Cold start: from launching the worker process to its first prediction (imports, model and detector "
         "loaded), measured inside the worker; import: the package with NumPy already imported. Peak RSS: "
         "the worker's own peak (VmHWM) after that first prediction (the whole run's peak, with the benchmark's "
         "buffers, is in peer.json; getrusage's ru_maxrss is not used: on Linux a spawned worker inherits its "
         "parent's)."),
        f"- Threads: {threads}.",
    ]


def plot(result: dict[str, Any], path: Path) -> None:
    """A bar chart of per-face latency (p50, with p90 whiskers), fer against each model of ours, at 1
    thread and the default threads. matplotlib's Figure directly: no pyplot state, no GUI backend."""
    from matplotlib.figure import Figure

    lat = result["latency"]["end_to_end"]["contenders"]
    who = ["fer", *_models(result)]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    width = 0.8 / len(who)
    for k, label in enumerate(who):
        rows = [lat[_name(label, t)] for t in THREAD_SETTINGS]
        xs = [i + (k - (len(who) - 1) / 2) * width for i in range(len(THREAD_SETTINGS))]
        p50 = [r["p50_ms"] for r in rows]
        whisker = [r["p90_ms"] - r["p50_ms"] for r in rows]
        ax.bar(xs, p50, width, label=label, yerr=[[0] * len(rows), whisker], capsize=3)
    ax.set_xticks(range(len(THREAD_SETTINGS)), ["1 thread", "default threads"])
    ax.set_ylabel("ms per face, end to end (p50, whisker p90)")
    ax.set_title(f"per-face latency on {result['environment']['cpu']}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """peer.json (everything), peer.md (the table) and peer.png (the latency chart) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "peer.json", out_dir / "peer.md", out_dir / "peer.png"]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    return paths


if __name__ == "__main__":
    worker_main()
