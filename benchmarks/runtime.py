"""Runtime benchmarks: EmotionRecognizer overhead over a bare ONNX Runtime call, and preprocessing throughput.

    python -m fer_bench.runtime [--model PATH] [--rounds 30] [--json out.json]

Overhead: at batch 1, ``EmotionRecognizer.predict_proba`` on a raw 48x48 uint8 face (NumPy
preprocessing + inference + softmax) against ``session.run`` on a ready float32 tensor, same
session, same thread count. The two are interleaved call by call and the overhead is the median
of the per-pair ratios. Preprocessing: ``fer_runtime.preprocess`` on batches of 256 raw 48x48
faces, single-threaded NumPy. Detection: ``EmotionRecognizer.detect`` on a 640x480 frame, the
detector fed a copy downscaled to 320 px wide (the default) vs the full frame, interleaved.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def measure_overhead(model: str | None, threads: int, rounds: int, calls: int) -> dict[str, Any]:
    from fer_runtime import EmotionRecognizer

    rec = EmotionRecognizer(model, threads=threads, providers="cpu")
    session = rec._session  # the same session, so only the wrapper differs
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    ready = rec.preprocess(face)
    for _ in range(200):  # warm-up
        rec.predict_proba(face)
        session.run([out], {inp: ready})
    bare, full, ratios = [], [], []
    for _ in range(rounds):
        t_bare = t_full = 0.0
        for _ in range(calls):  # interleaved call by call: drift hits both alike
            t0 = time.perf_counter()
            session.run([out], {inp: ready})
            t1 = time.perf_counter()
            rec.predict_proba(face)
            t2 = time.perf_counter()
            t_bare += t1 - t0
            t_full += t2 - t1
        bare.append(t_bare / calls)
        full.append(t_full / calls)
        ratios.append(t_full / t_bare)
    return {
        "threads": threads,
        "bare_session_run_us": statistics.median(bare) * 1e6,
        "predict_proba_us": statistics.median(full) * 1e6,
        "overhead": statistics.median(ratios) - 1.0,
        "rounds": rounds,
        "calls_per_round": calls,
    }


def measure_preprocessing(batch: int, rounds: int) -> dict[str, Any]:
    from fer_runtime import preprocess

    faces = np.random.default_rng(1).integers(0, 256, (batch, 48, 48), dtype=np.uint8)
    for _ in range(5):
        preprocess(faces)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        preprocess(faces)
        times.append(time.perf_counter() - t0)
    return {"batch": batch, "faces_per_second": batch / statistics.median(times), "rounds": rounds}


def measure_detect(rounds: int, data: Path | None) -> dict[str, Any]:
    """Whole-frame latency of ``EmotionRecognizer.detect``: detector on a 320 px copy vs the full frame."""
    from fer_runtime import EmotionRecognizer
    from fer_runtime.preprocessing import resize

    frame = np.full((480, 640), 100, np.uint8)
    source = "synthetic frame (no FER2013 data found)"
    try:
        from fer_train.data import load_fer2013

        faces = load_fer2013(data).split("PublicTest").images[:3]
        for i, face in enumerate(faces):
            frame[150:310, 40 + 200 * i : 200 + 200 * i] = resize(face, 160)
        source = "640x480 frame with three PublicTest faces enlarged to 160 px"
    except Exception:  # noqa: BLE001 - the benchmark still runs, on a blank frame, and says so
        pass
    rec = EmotionRecognizer(threads=1, providers="cpu")
    widths = {"detect_width=320": 320, "detect_width=640 (full frame)": 640}
    for w in widths.values():
        rec.detect(frame, detect_width=w)
    times: dict[str, list[float]] = {k: [] for k in widths}
    found = {k: len(rec.detect(frame, detect_width=w)) for k, w in widths.items()}
    for _ in range(rounds):
        for k, w in widths.items():
            t0 = time.perf_counter()
            rec.detect(frame, detect_width=w)
            times[k].append(time.perf_counter() - t0)
    return {"frame": source, "ms": {k: statistics.median(v) * 1e3 for k, v in times.items()}, "faces_found": found}


@app.command()
def main(
    model: Annotated[Optional[str], typer.Option(help="Bundled model name or .onnx path (default: the bundled default).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime intra-op threads.")] = 1,
    rounds: Annotated[int, typer.Option(min=3)] = 30,
    calls: Annotated[int, typer.Option(min=1, help="Calls per round for the overhead pairs.")] = 100,
    detect: Annotated[bool, typer.Option(help="Also time whole-frame detection (needs the detect extra).")] = True,
    data: Annotated[Optional[Path], typer.Option(envvar="FER2013_PATH", help="FER2013, for real faces in the detection frame.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json")] = None,
) -> None:
    """Measure the runtime's overhead at batch 1 and the preprocessing throughput."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    overhead = measure_overhead(model, threads, rounds, calls)
    prep = measure_preprocessing(256, rounds)
    typer.echo(f"batch 1, {threads} thread(s), median of {rounds} rounds x {calls} interleaved calls:")
    typer.echo(f"  bare session.run on a ready tensor   {overhead['bare_session_run_us']:8.1f} us")
    typer.echo(f"  EmotionRecognizer.predict_proba      {overhead['predict_proba_us']:8.1f} us")
    typer.echo(f"  overhead (median of paired ratios)   {overhead['overhead']:8.1%}")
    typer.echo(f"preprocessing, batches of 256 raw 48x48 faces: {prep['faces_per_second']:,.0f} faces/s (one core)")
    result: dict[str, Any] = {"overhead": overhead, "preprocessing": prep}
    if detect:
        result["detect"] = det = measure_detect(rounds, data)
        typer.echo(f"detect + classify, {det['frame']}, 1 thread, median of {rounds}:")
        for k, ms in det["ms"].items():
            typer.echo(f"  {k:30s} {ms:6.2f} ms  ({det['faces_found'][k]} faces found)")
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    app()
