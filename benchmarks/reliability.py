"""Reliability runs behind RELIABILITY.md: concurrency, soak, decompression bombs and kill tests.

    python -m fer_bench.reliability concurrency   # 8 threads x 10,000 calls, and 2 processes, vs serial
    python -m fer_bench.reliability soak          # 1,000,000 predict_proba + 100,000 detect, RSS sampled
    python -m fer_bench.reliability bombs         # PNG/JPEG declaring huge sizes: refusal time, peak RSS
    python -m fer_bench.reliability kill-train    # kill -9 at 20+ random moments of training, then resume
    python -m fer_bench.reliability kill-predict  # kill -9 of fer-predict over a folder and a video
    python -m fer_bench.reliability kill-export   # kill -9 of fer-export mid-write

Each writes ``benchmarks/results/reliability/<name>.json`` (``-o`` to change) and prints a summary.
The tests run the same workloads, shorter (tests/test_concurrency.py, tests/test_hostile.py,
tests/test_kill.py); figures that move with machine load live only here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fer_bench.checkout import checkout_path

RESULTS = Path("benchmarks/results/reliability")
MODEL = "vgg-taper-int8"  # the fast bundled variant: the long runs fit in a session on 2 cores
SOAK_BOUND_MB = 5.0  # RSS growth allowed after the warm-up of a soak run


# --- concurrency -------------------------------------------------------------------------------

def workload(n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``n`` calls: face batches for ``predict_proba`` and photo frames for ``detect``, interleaved."""
    from fer_runtime import load_image

    rng = np.random.default_rng(seed)
    photos = [load_image(p) for p in sorted(checkout_path("tests/data/photos").glob("*.jpg"))]
    calls: list[tuple[str, np.ndarray]] = []
    for i in range(n):
        if i % 4 == 3:
            photo = photos[int(rng.integers(len(photos)))]
            calls.append(("detect", photo[: int(rng.integers(photo.shape[0] // 2, photo.shape[0] + 1))]))
        else:
            calls.append(("proba", rng.integers(0, 256, (int(rng.integers(1, 6)), 48, 48), dtype=np.uint8)))
    return calls


def answer(rec: Any, call: tuple[str, np.ndarray]) -> bytes:
    """One call's result as bytes: equal bytes, bitwise equal results."""
    kind, x = call
    if kind == "proba":
        return rec.predict_proba(x).tobytes()
    faces = [(f.box, f.detector_score, f.landmarks, tuple(f.prediction.vector.tolist())) for f in rec.detect(x)]
    boxes = [(d.box, d.score, d.landmarks) for d in rec.pipeline.detector.detect(x)]  # the detector on its own
    return repr((faces, boxes)).encode()  # repr of a float round-trips: equal text, equal bits


def threaded_mismatches(rec: Any, calls: list[tuple[str, np.ndarray]], serial: list[bytes], threads: int,
                        calls_per_thread: int) -> int:
    """``threads`` threads share ``rec``, each making ``calls_per_thread`` calls; results that differ from serial."""
    mismatches = [0] * threads

    def work(t: int) -> None:
        for k in range(calls_per_thread):
            i = (t * 7919 + k) % len(calls)  # each thread walks the calls in its own order
            mismatches[t] += answer(rec, calls[i]) != serial[i]

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(mismatches)


_WORKER: Any = None


def _init_worker(blob: bytes) -> None:
    global _WORKER
    _WORKER = pickle.loads(blob)


def _worker_answer(call: tuple[str, np.ndarray]) -> bytes:
    return answer(_WORKER, call)


def process_mismatches(rec: Any, calls: list[tuple[str, np.ndarray]], serial: list[bytes], processes: int) -> int:
    """The calls spread over ``processes`` spawned processes, each given the pickled recognizer."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes, initializer=_init_worker, initargs=(pickle.dumps(rec),)) as pool:
        results = pool.map(_worker_answer, calls, chunksize=8)
    return sum(a != b for a, b in zip(results, serial))


def run_concurrency(calls_per_thread: int = 10_000, threads: int = 8, processes: int = 2) -> dict[str, Any]:
    from fer_runtime import EmotionRecognizer, FaceDetector

    rec = EmotionRecognizer(MODEL, detector=FaceDetector(), precision="named")
    calls = workload(400)
    serial = [answer(rec, c) for c in calls]
    start = time.perf_counter()
    threaded = threaded_mismatches(rec, calls, serial, threads, calls_per_thread)
    seconds = time.perf_counter() - start
    return {"threads": threads, "calls_per_thread": calls_per_thread, "thread_mismatches": threaded,
            "thread_seconds": round(seconds, 1), "processes": processes, "process_calls": len(calls),
            "process_mismatches": process_mismatches(rec, calls, serial, processes)}


# --- soak --------------------------------------------------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(call: Callable[[int], object], n: int, samples: int = 50, warmup: int = 1000) -> dict[str, Any]:
    """``call(i)`` for i < n with RSS sampled ``samples`` times after a warm-up: growth after the warm-up."""
    for i in range(min(warmup, n)):
        call(i)
    every = max(1, n // samples)
    trace = []
    for i in range(n):
        call(i)
        if i % every == 0 or i == n - 1:
            trace.append(round(rss_mb(), 1))
    growth = round(max(trace) - trace[0], 1)
    return {"calls": n, "warmup": warmup, "rss_mb_first": trace[0], "rss_mb_last": trace[-1], "rss_mb_max": max(trace),
            "growth_mb": growth, "bound_mb": SOAK_BOUND_MB, "within_bound": growth <= SOAK_BOUND_MB, "trace": trace}


def run_soak(proba_calls: int = 1_000_000, detect_calls: int = 100_000) -> dict[str, Any]:
    from fer_runtime import EmotionRecognizer, FaceDetector, load_image

    rec, det = EmotionRecognizer(MODEL, threads=1, precision="named"), FaceDetector(threads=1)
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    frame = load_image(checkout_path("tests/data/photos") / "grace_hopper.jpg")
    return {"predict_proba": soak(lambda i: rec.predict_proba(faces[i % 64]), proba_calls),
            "detect": soak(lambda i: det.detect(frame), detect_calls)}


# --- decompression bombs -----------------------------------------------------------------------

def _png(width: int, height: int, colour_type: int, idat: bytes) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` RGB (its pixel data is a few bytes)."""
    import zlib

    return _png(width, height, 2, zlib.compress(b"\x00" * 64))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 JPEG with the size in its frame header (SOF0) rewritten to ``width`` x ``height``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 90, 60)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG that really holds ``width`` x ``height`` grey pixels, deflated to well under 1 MB."""
    import zlib

    deflate = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    return _png(width, height, 0, b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush())


BOMB_PROBE = """
import resource, sys, time
from fer_runtime import FerError, load_image
data = open(sys.argv[1], "rb").read()
load_image(open(sys.argv[2], "rb").read())  # Pillow imported and warm: the timing is the refusal alone
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_image(data)
    outcome = "decoded"
except FerError as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:90]
ms = (time.perf_counter() - start) * 1000
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{ms:.2f} {before / 1024:.1f} {peak / 1024:.1f} {outcome}")
"""


def small_photo() -> Path:
    return checkout_path("tests/data/photos") / "cameraman.jpg"


def run_bombs(out: Path) -> dict[str, Any]:
    """Each bomb refused in a fresh process: refusal time and peak RSS against the process's baseline."""
    bombs = {"png declares 9000x9000": png_declaring(9000, 9000),
             "png declares 100000x100000": png_declaring(100_000, 100_000),
             "jpeg declares 9000x9000": jpeg_declaring(9000, 9000),
             "jpeg declares 65500x65500": jpeg_declaring(65_500, 65_500),
             "png holds 30000x30000 (real pixels)": png_bomb()}
    rows = {}
    for name, data in bombs.items():
        path = out / "bomb.bin"
        path.write_bytes(data)
        done = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(path), str(small_photo())], capture_output=True,
                              text=True, check=True)
        ms, base, peak, outcome = done.stdout.split(" ", 3)
        rows[name] = {"file_bytes": len(data), "refusal_ms": float(ms), "rss_before_mb": float(base),
                      "peak_rss_mb": float(peak), "outcome": outcome.strip()}
    path.unlink()
    return rows


# --- kill tests --------------------------------------------------------------------------------

def kill_at(cmd: list[str], delay_s: float = 600.0, ready: Callable[[], bool] | None = None, **popen: Any) -> int | None:
    """Start ``cmd`` and SIGKILL it after ``delay_s``, or as soon as ``ready()`` (unless it ended first)."""
    proc = subprocess.Popen(cmd, stdout=popen.pop("stdout", subprocess.DEVNULL), stderr=subprocess.DEVNULL, **popen)
    deadline = time.monotonic() + delay_s
    while proc.poll() is None and time.monotonic() < deadline and not (ready and ready()):
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode


def training_cmd(data: Path, out: Path, *, limit: int = 1200, epochs: int = 4) -> list[str]:
    return [sys.executable, "-m", "fer_train", "--data", str(data), "-o", str(out), "--limit", str(limit),
            "--epochs", str(epochs), "--batch-size", "64", "--no-progress"]


def same_weights(a: Path, b: Path) -> bool:
    import torch

    from fer_train.checkpoint import Checkpoint

    ca, cb = Checkpoint.load(a / "last.pt"), Checkpoint.load(b / "last.pt")
    return ca.epoch == cb.epoch and all(torch.equal(t, cb.state_dict[k]) for k, t in ca.state_dict.items())


def kill_training(data: Path, work: Path, kills: int, seed: int = 0) -> dict[str, Any]:
    """An uninterrupted run, then the same run killed at random moments and resumed each time, until
    ``kills`` kills have landed mid-run. A run that ends before its kill has reached the final weights:
    they must equal the uninterrupted run's, and the next attempt starts a fresh run."""
    rng = np.random.default_rng(seed)
    reference = work / "reference"
    start = time.perf_counter()
    subprocess.run(training_cmd(data, reference), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whole_s = time.perf_counter() - start
    delays, landed, runs, resumed, same, saved_epochs = [], 0, 0, 0, [], []
    killed, resume = work / "killed-0", False
    while landed < kills:
        delay = float(rng.uniform(0.1, 1.0)) * whole_s
        code = kill_at([*training_cmd(data, killed), *(["--resume"] if resume else [])], delay)
        delays.append(round(delay, 2))
        if code == -signal.SIGKILL:
            landed, resume = landed + 1, True
            saved_epochs.append(_saved_epoch(killed))
            continue
        same.append(code == 0 and same_weights(reference, killed))  # this run finished: compare, start afresh
        resumed += resume
        runs += 1
        killed, resume = work / f"killed-{runs}", False
    if resume:  # the last killed run, resumed to its end
        final = subprocess.run([*training_cmd(data, killed), "--resume"], capture_output=True, text=True)
        same.append(final.returncode == 0 and same_weights(reference, killed))
        resumed += 1
    return {"kills": landed, "attempts": len(delays), "uninterrupted_s": round(whole_s, 1), "delays_s": delays,
            "killed_by_signal": landed, "ended_before_the_kill": len(delays) - landed, "runs_to_the_end": len(same),
            "of_which_resumed_after_kills": resumed,
            "epochs_saved_at_each_kill": saved_epochs,
            "same_final_weights": all(same), "runs_with_other_weights": same.count(False)}


def _saved_epoch(out: Path) -> int:
    """Epochs the killed run had saved in last.pt (0: killed before its first epoch ended)."""
    from fer_train.checkpoint import Checkpoint

    return int(Checkpoint.load(out / "last.pt").epoch or 0) if (out / "last.pt").exists() else 0


def complete_lines(path: Path) -> list[str]:
    """The lines of an output that were written whole (a line cut by the kill is not a row yet)."""
    return [ln for ln in path.read_text().splitlines(keepends=True) if ln.endswith("\n")] if path.exists() else []


def timed_run(cmd: list[str], out: Path) -> float:
    start = time.perf_counter()
    with out.open("w") as rows_file:
        subprocess.run(cmd, stdout=rows_file, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def kill_predict(inputs: list[Path], work: Path, kills: int, seed: int = 0) -> dict[str, Any]:
    """``fer-predict`` over each input run whole, then killed at random moments of a run as long: the
    output of every killed run must be whole lines that parse and equal the start of the whole run's."""
    rng = np.random.default_rng(seed)
    runs, seconds = [], {}
    for k in range(kills):
        source, fmt = inputs[k % len(inputs)], ("--json", "--csv")[(k // len(inputs)) % 2]
        cmd = [sys.executable, "-m", "fer_runtime", str(source), fmt]
        whole = work / f"whole-{source.name}{fmt}"
        if not whole.exists():
            seconds[source] = timed_run(cmd, whole)
        delay = float(rng.uniform(0.2, 1.0)) * seconds[source]
        out = work / f"rows{k}{fmt}"
        with out.open("w") as rows_file:  # fer-predict writes its rows to stdout
            code = kill_at(cmd, delay, stdout=rows_file)
        lines, expected = complete_lines(out), complete_lines(whole)
        runs.append({"input": source.name, "format": fmt[2:], "delay_s": round(delay, 2), "returncode": code,
                     "rows": len(lines), "of": len(expected), "prefix_of_whole_run": lines == expected[: len(lines)],
                     "parse": _parses(lines, fmt)})
    return {"kills": kills, "runs": runs, "killed_by_signal": sum(r["returncode"] == -signal.SIGKILL for r in runs),
            "bad_outputs": sum(not (r["prefix_of_whole_run"] and r["parse"]) for r in runs)}


def _parses(lines: list[str], fmt: str) -> bool:
    import csv

    if fmt == "--json":
        return all(isinstance(json.loads(ln), dict) for ln in lines)
    rows = list(csv.reader(lines))
    return all(len(r) == len(rows[0]) for r in rows)


def staged_files(folder: Path) -> list[Path]:
    """What fer-export is writing: files in its staging folders (renamed into place only when checked)."""
    return [p for d in folder.glob(".fer-export-*") for p in d.iterdir()]


def kill_export(checkpoint: Path, work: Path, kills: int, seed: int = 0, data: Path | None = None) -> dict[str, Any]:
    """``fer-export`` killed as soon as its model file is being written, then at random moments up to
    1.1x an uninterrupted export's duration: the target is either absent or a complete, loadable model."""
    rng = np.random.default_rng(seed)

    def cmd(target: Path) -> list[str]:
        return [sys.executable, "-m", "fer_export", str(checkpoint), "-o", str(target), *(["--data", str(data)] if data else [])]

    start = time.perf_counter()
    whole = subprocess.run(cmd(work / "whole.onnx"), capture_output=True).returncode if kills else None
    whole_s = time.perf_counter() - start
    runs = []
    for k in range(kills + 1):
        target = work / f"m{k}.onnx"
        delay = float(rng.uniform(0.02, 1.1)) * whole_s if k else 600.0
        code = kill_at(cmd(target), delay, None if k else (lambda: bool(staged_files(work))))
        runs.append({"kill": "while writing" if not k else f"at {delay:.2f} s", "returncode": code,
                     "target": _export_state(target), "staging_dirs_left": len(list(work.glob(".fer-export-*")))})
    return {"kills": kills + 1, "uninterrupted_s": round(whole_s, 1), "uninterrupted_returncode": whole, "runs": runs,
            "killed_by_signal": sum(r["returncode"] == -signal.SIGKILL for r in runs),
            "complete": sum(r["target"] == "complete" for r in runs),
            "half_written": sum(r["target"] == "half-written" for r in runs)}


def _export_state(target: Path) -> str:
    from fer_runtime import EmotionRecognizer, FerError

    if not target.exists():
        return "absent"
    try:
        EmotionRecognizer(target, threads=1)
        return "complete"
    except FerError:
        return "half-written"


# --- command line ------------------------------------------------------------------------------

def _write(out: Path, name: str, result: dict[str, Any]) -> None:
    from fer_bench.env import environment

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"environment": environment(), **result}, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "trace"}, indent=1, default=str)[:4000])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_bench.reliability", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", choices=["concurrency", "soak", "bombs", "kill-train", "kill-predict", "kill-export"])
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--calls", type=int, default=None, help="calls per thread (concurrency) or predict_proba calls (soak)")
    parser.add_argument("--data", type=Path, default=None, help="FER2013 CSV for kill-train (default: found as fer-train finds it)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fer-reliability-") as tmp:
        work = Path(tmp)
        result = _dispatch(args, work)
    _write(args.out, args.run.replace("-", "_"), result)


def _dispatch(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.run == "concurrency":
        return run_concurrency(args.calls or 10_000)
    if args.run == "soak":
        calls = args.calls or 1_000_000
        return run_soak(calls, calls // 10)
    if args.run == "bombs":
        return run_bombs(work)
    if args.run == "kill-train":
        from fer_train.data import default_data_path, resolve_csv

        return kill_training(resolve_csv(args.data or default_data_path()), work, args.kills)
    if args.run == "kill-predict":
        return kill_predict(predict_inputs(work), work, args.kills)
    return kill_export(checkout_path("models/seed/best.pt"), work, args.kills)


def predict_inputs(work: Path) -> list[Path]:
    """A folder of 600 photos (copies of the test photos) and a 30 s clip with two moving faces."""
    import shutil

    from fer_bench.clips import Mover, moving_faces, write_clip

    folder = work / "photos"
    folder.mkdir()
    photos = sorted(checkout_path("tests/data/photos").glob("*.jpg"))
    for i in range(600):
        shutil.copy(photos[i % len(photos)], folder / f"{i:03d}{photos[i % len(photos)].name}")
    clip = work / "clip.mp4"
    movers = [Mover((80, 120), (40, 10), 90), Mover((240, 100), (-30, 20), 80)]
    write_clip(clip, (f for f, _ in moving_faces((240, 320), movers, 15.0, 450)), 15.0)
    return [folder, clip]


if __name__ == "__main__":
    main()
