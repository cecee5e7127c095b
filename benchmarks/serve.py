"""fer-serve under load on 127.0.0.1, against in-process ``detect`` on the same image.

One 640x480 JPEG with one face (a frame of a generated clip). In process: ``load_image`` +
``detect`` (decoding included), one caller with the service's thread count, and the best use of
both cores (two callers of one thread each). The service: a real ``fer-serve`` process per
setting, driven by a minimal keep-alive HTTP client (it shares the CPU with the server, so it must
cost little) at concurrency 1, 8 and 32; a WebSocket client sending a generated clip's frames one
at a time; the server's RSS over a long run. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from fer_bench.clips import default_movers, moving_faces
from fer_bench.stats import percentiles

SIZE = (480, 640)
# label -> fer-serve options: how one worker uses the two cores, with and without micro-batching
SETTINGS: dict[str, list[str]] = {
    "1 job x 2 threads": ["--jobs", "1", "--threads", "2"],
    "2 jobs x 1 thread": ["--jobs", "2", "--threads", "1"],
    "2 jobs x 1 thread, batching": ["--jobs", "2", "--threads", "1", "--batch-size", "32"],
    "4 jobs x 1 thread, batching": ["--jobs", "4", "--threads", "1", "--batch-size", "32"],
}
QUEUE = 16  # the default queue: at concurrency 32 some requests are answered 503 by design


def clip_jpegs(frames: int, quality: int = 90) -> list[bytes]:
    """JPEG bytes of a generated 640x480 clip with one face moving."""
    from PIL import Image

    out = []
    for frame, _ in moving_faces(SIZE, default_movers(1, SIZE, 20.0), 30.0, frames):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


# --- a fer-serve process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(args: list[str], port: int, env: dict[str, str] | None = None, timeout_s: float = 60.0
                ) -> subprocess.Popen:
    """``fer-serve --port PORT ARGS`` started and answering /readyz (or RuntimeError with its stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fer_runtime.serve.cli", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fer-serve exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        if ready(port):
            return proc
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"fer-serve did not answer on port {port} within {timeout_s:g} s")


def ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    """Signal the process and wait for it; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    finally:
        if proc.stderr is not None:
            proc.stderr.close()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# --- a minimal HTTP client -------------------------------------------------------------------------


def post(path: str, body: bytes, content_type: str = "image/jpeg", token: str | None = None) -> bytes:
    """A complete HTTP/1.1 POST request, ready to send on a keep-alive connection."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{auth}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: send a prepared request, read status and body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        body = await self.reader.readexactly(int(length.group(1))) if length else b""
        if re.search(rb"(?i)connection: *close", head):
            self.close()
        return int(head[9:12]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(port: int, raw: bytes, concurrency: int, total: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    left = iter(range(total))

    async def client() -> None:
        conn = Connection(port)
        for _ in left:
            start = time.perf_counter()
            try:
                status, _ = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError):
                status = 0
                conn.close()
            if status == 200:
                latencies.append(time.perf_counter() - start)
            statuses[status] += 1
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"latencies": latencies, "wall": time.perf_counter() - start, "statuses": statuses}


def load(port: int, raw: bytes, concurrency: int, total: int) -> dict[str, Any]:
    """``total`` requests from ``concurrency`` keep-alive clients: the 200s' latencies, the wall time, the statuses."""
    return asyncio.run(_load(port, raw, concurrency, total))


def summarize(blocks: list[dict[str, Any]], **labels: Any) -> dict[str, Any]:
    """Blocks of one setting (from interleaved rounds) as one row: requests/s over their summed wall
    time, latency percentiles of their 200s, every status counted; errors are statuses but 200 and 503."""
    latencies = [t for b in blocks for t in b["latencies"]]
    statuses: Counter[int] = sum((Counter(b["statuses"]) for b in blocks), Counter())
    return {**labels, "requests": sum(statuses.values()), "ok": len(latencies),
            "rps": len(latencies) / sum(b["wall"] for b in blocks),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "errors": sum(v for k, v in statuses.items() if k not in (200, 503)), **percentiles(latencies or [0.0])}


# --- in process ------------------------------------------------------------------------------------


def in_process(rec: Any, jpeg: bytes, calls: int, callers: int) -> dict[str, Any]:
    """``load_image`` + ``detect`` on the JPEG ``calls`` times, from ``callers`` threads sharing ``rec``."""
    from fer_runtime import load_image

    times: list[float] = []
    left = iter(range(calls))

    def caller() -> None:
        for _ in left:
            start = time.perf_counter()
            rec.detect(load_image(jpeg))
            times.append(time.perf_counter() - start)

    workers = [threading.Thread(target=caller) for _ in range(callers)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"latencies": times, "wall": time.perf_counter() - start, "statuses": {200: calls}}


IN_PROCESS = {"2 threads x 1 caller": (2, 1), "1 thread x 1 caller": (1, 1), "1 thread x 2 callers": (1, 2)}


# --- the service -----------------------------------------------------------------------------------


def sweep(settings: dict[str, list[str]], jpeg: bytes, concurrencies: list[int], requests: int, rounds: int,
          progress: Callable[[str], None]) -> dict[str, Any]:
    """Every service setting (all started at once, idle when not loaded) and every in-process setting, in
    ``rounds`` rounds of short blocks, in a new random order each round, so that the machine's drift
    (it is shared) falls on all of them alike. ``requests``: per setting and concurrency, all rounds together."""
    from fer_runtime.serve.engine import build_recognizer
    from fer_runtime.serve.limits import ServeConfig

    raw, per_block = post("/v1/faces", jpeg), max(1, requests // rounds)
    recognizers = {t: build_recognizer(ServeConfig(threads=t)) for t in {t for t, _ in IN_PROCESS.values()}}
    servers = {}
    try:
        for label, args in settings.items():
            port = free_port()
            servers[label] = (start_serve(args, port), port)
            load(port, raw, 2, 40)  # warm-up
        for rec in recognizers.values():
            in_process(rec, jpeg, 20, 1)
        blocks: dict[tuple[str, int], list[dict[str, Any]]] = {}
        names = [*IN_PROCESS, *settings]
        for r in range(rounds):
            progress(f"round {r + 1} of {rounds}")
            for name in np.random.default_rng(r).permutation(names):
                if name in IN_PROCESS:
                    threads, callers = IN_PROCESS[name]
                    blocks.setdefault((name, callers), []).append(in_process(recognizers[threads], jpeg, per_block, callers))
                    continue
                for c in concurrencies:
                    blocks.setdefault((name, c), []).append(load(servers[name][1], raw, c, per_block))
    finally:
        for proc, _ in servers.values():
            stop(proc)
    return {"in_process": {name: summarize(blocks[(name, IN_PROCESS[name][1])], threads=IN_PROCESS[name][0],
                                           callers=IN_PROCESS[name][1]) for name in IN_PROCESS},
            "http": {label: [summarize(blocks[(label, c)], concurrency=c) for c in concurrencies] for label in settings},
            "rounds": rounds}


def stream_run(args: list[str], frames: list[bytes]) -> dict[str, Any]:
    """Frames sent one at a time, each answer awaited: frames/s end to end over WebSocket."""
    from websockets.sync.client import connect

    port = free_port()
    proc = start_serve([*args, "--max-fps", "1000"], port)
    try:
        with connect(f"ws://127.0.0.1:{port}/v1/stream", max_size=2**22) as ws:
            ws.send(frames[0])
            ws.recv()
            start, faces = time.perf_counter(), 0
            for data in frames:
                ws.send(data)
                faces += len(json.loads(ws.recv())["faces"])
            wall = time.perf_counter() - start
    finally:
        stop(proc)
    return {"frames": len(frames), "fps": len(frames) / wall, "faces": faces}


def stream_in_process(frames: list[bytes], threads: int) -> dict[str, Any]:
    """The same frames decoded and analysed by VideoAnalyzer in process."""
    from fer_runtime import VideoAnalyzer, load_image
    from fer_runtime.serve.engine import build_recognizer
    from fer_runtime.serve.limits import ServeConfig

    analyzer = VideoAnalyzer(build_recognizer(ServeConfig(threads=threads)).pipeline)
    start = time.perf_counter()
    results = list(analyzer.run(load_image(f) for f in frames))
    return {"frames": len(results), "fps": len(results) / (time.perf_counter() - start)}


def soak_run(args: list[str], raw: bytes, requests: int, concurrency: int = 8, samples: int = 40,
             warmup: int = 1000) -> dict[str, Any]:
    """Server RSS over ``requests`` requests (after ``warmup``), sampled ``samples`` times."""
    port = free_port()
    proc = start_serve(args, port)
    try:
        load(port, raw, concurrency, warmup)
        trace, statuses, start = [rss_mb(proc.pid)[0]], Counter(), time.perf_counter()
        step = max(1, requests // samples)
        for done in range(0, requests, step):
            statuses.update({str(k): v for k, v in load(port, raw, concurrency, min(step, requests - done))["statuses"].items()})
            trace.append(rss_mb(proc.pid)[0])
        peak = rss_mb(proc.pid)[1]
        wall = time.perf_counter() - start
    finally:
        stop(proc)
    return {"requests": requests, "warmup": warmup, "concurrency": concurrency, "seconds": wall,
            "rss_mb_first": trace[0], "rss_mb_last": trace[-1], "rss_mb_max": max(trace), "peak_rss_mb": peak,
            "growth_mb": max(trace) - trace[0], "statuses": dict(statuses), "trace": [round(t, 1) for t in trace]}


def serve_benchmark(requests: int = 300, concurrencies: tuple[int, ...] = (1, 8, 32), rounds: int = 10,
                    stream_frames: int = 300, soak_requests: int = 100_000,
                    settings: dict[str, list[str]] | None = None,
                    progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    load_before = os.getloadavg()  # the machine is shared: how busy it was is part of the record
    jpeg = clip_jpegs(1)[0]
    result: dict[str, Any] = {"image": {"size": list(SIZE), "jpeg_bytes": len(jpeg)}, "queue": QUEUE,
                              "settings": settings or SETTINGS}
    result.update(sweep(result["settings"], jpeg, list(concurrencies), requests, rounds, progress))
    frames = clip_jpegs(stream_frames)
    progress("stream")
    result["stream"] = {"service": stream_run([], frames), "in_process": stream_in_process(frames, 1)}
    result["soak"] = None
    if soak_requests:
        progress(f"soak: {soak_requests} requests")
        result["soak"] = soak_run([], post("/v1/faces", jpeg), soak_requests)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


# --- the report ------------------------------------------------------------------------------------


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, what was measured, met) for each of the service's targets."""
    local = result["in_process"]
    best = max(run["rps"] for run in local.values())
    rows = []
    for label, runs in result["http"].items():
        by_c = {r["concurrency"]: r for r in runs}
        base = local["2 threads x 1 caller" if "2 threads" in label else "1 thread x 1 caller"]
        if 1 in by_c:
            extra = by_c[1]["p50_ms"] - base["p50_ms"]
            rows.append((f"{label}: concurrency 1 adds <= 2 ms (p50, vs in process with the same threads)",
                         f"{extra:+.2f} ms", extra <= 2.0))
        if 8 in by_c:
            ratio = by_c[8]["rps"] / best
            rows.append((f"{label}: concurrency 8 >= 0.9x the best in-process throughput ({best:.1f}/s)",
                         f"{ratio:.2f}x", ratio >= 0.9))
        errors = sum(r["errors"] for r in runs)
        rows.append((f"{label}: no errors but the queue's 503s", f"{errors} errors", errors == 0))
    soak = result.get("soak")
    if soak:
        rows.append((f"RSS growth < 20 MB over {soak['requests']:,} requests", f"{soak['growth_mb']:.1f} MB",
                     soak["growth_mb"] < 20))
        errors = sum(v for k, v in soak["statuses"].items() if k not in ("200", "503"))
        rows.append(("soak: no errors but the queue's 503s", f"{errors} errors", errors == 0))
    return rows


def serve_markdown(result: dict[str, Any]) -> str:
    img = result["image"]
    load = result.get("load_average")
    busy = f" Load average (1, 5, 15 min) before: {load['before']}, after: {load['after']}." if load else ""
    lines = [f"One {img['size'][1]}x{img['size'][0]} JPEG ({img['jpeg_bytes']:,} bytes) with one face, POST /v1/faces "
             f"on 127.0.0.1 (decoding included on both sides).{busy}", "",
             f"Every setting in {result['rounds']} interleaved rounds of short blocks.", "",
             "| in process (load_image + detect) | p50 ms | p99 ms | requests/s |", "|---|---|---|---|"]
    for key, run in result["in_process"].items():
        lines.append(f"| {key} | {run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['rps']:.1f} |")
    lines += ["", "| fer-serve | concurrency | requests/s | p50 ms | p99 ms | statuses |", "|---|---|---|---|---|---|"]
    for label, runs in result["http"].items():
        for r in runs:
            statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())
            lines.append(f"| {label} | {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                         f"| {statuses} |")
    stream = result["stream"]
    lines += ["", f"WebSocket /v1/stream, {stream['service']['frames']} frames of a generated 640x480 clip sent one at "
              f"a time: {stream['service']['fps']:.1f} frames/s; VideoAnalyzer in process on the same JPEGs "
              f"(decoded): {stream['in_process']['fps']:.1f} frames/s."]
    soak = result.get("soak")
    if soak:
        lines += ["", f"Soak: {soak['requests']:,} requests at concurrency {soak['concurrency']} after "
                  f"{soak['warmup']:,} of warm-up, {soak['seconds']:.0f} s: server RSS {soak['rss_mb_first']:.1f} -> "
                  f"{soak['rss_mb_last']:.1f} MB (max {soak['rss_mb_max']:.1f}, peak {soak['peak_rss_mb']:.1f}); "
                  f"statuses {soak['statuses']}."]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in targets(result)]
    return "\n".join(lines) + "\n"
