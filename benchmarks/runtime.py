"""Runtime benchmarks: EmotionRecognizer overhead over a bare ONNX Runtime call, and preprocessing throughput.

    python -m fer_bench.runtime [--model PATH] [--rounds 30] [--json out.json]

Overhead: at batch 1, ``EmotionRecognizer.predict_proba`` on a raw 48x48 uint8 face (NumPy
preprocessing + inference + softmax) against ``session.run`` on a ready float32 tensor, same
session, same thread count. The two are interleaved call by call and the overhead is the median
of the per-pair ratios. Steps: each step of that call timed on its own, all steps in every round.
Preprocessing: ``fer_runtime.preprocess`` on batches of 256 raw 48x48
faces, single-threaded NumPy.
Whole-frame detection is measured by ``fer-bench detect``.
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

    rec = EmotionRecognizer(model, threads=threads, providers="cpu", precision="named")
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


def measure_steps(model: str | None, threads: int, rounds: int, calls: int) -> dict[str, Any]:
    """Median microseconds of each step of ``predict_proba`` on one raw 48x48 uint8 face, every step
    timed in every round (interleaved, so drift lands on all): preprocessing by the single-face path
    and by the batch path it replaced for one face, the session run, the calibrated softmax, and the
    whole call."""
    from fer_runtime import EmotionRecognizer
    from fer_runtime.preprocessing import _equalize_luts, preprocess_face, scaled_levels
    from fer_runtime.recognizer import calibrated

    rec = EmotionRecognizer(model, threads=threads, providers="cpu", precision="named")
    session, cfg, info = rec._session, rec.info.preprocess, rec.info
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    ready, logits = rec.preprocess(face), rec.logits(rec.preprocess(face))
    levels = scaled_levels(cfg.mean, cfg.std)

    def batch_path() -> np.ndarray:  # one face through the batch equalization, as before the single-face path
        lut, index = _equalize_luts(face.reshape(1, -1))
        return levels[lut].ravel()[index].reshape(1, 1, 48, 48)

    steps = {"preprocess, single-face path": lambda: preprocess_face(face, cfg),
             "preprocess, batch path (before)": batch_path,
             "session.run on the ready tensor": lambda: session.run([out], {inp: ready}),
             "calibrated softmax": lambda: calibrated(logits, info),
             "predict_proba, whole call": lambda: rec.predict_proba(face)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds + 1):  # round 0 warms up
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                step()
            if r:
                times[name].append((time.perf_counter() - t0) / calls)
    return {"threads": threads, "rounds": rounds, "calls_per_round": calls, "model": info.source,
            "steps_us": {k: statistics.median(v) * 1e6 for k, v in times.items()}}


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


@app.command()
def main(
    model: Annotated[Optional[str], typer.Option(help="Bundled model name or .onnx path (default: the bundled default).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime intra-op threads.")] = 1,
    rounds: Annotated[int, typer.Option(min=3)] = 30,
    calls: Annotated[int, typer.Option(min=1, help="Calls per round for the overhead pairs.")] = 100,
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
    steps = measure_steps(model, threads, rounds, calls)
    typer.echo(f"steps of predict_proba on one face ({steps['model']}, median of {rounds} rounds x {calls} calls each):")
    for name, us in steps["steps_us"].items():
        typer.echo(f"  {name:36s} {us:8.1f} us")
    result: dict[str, Any] = {"overhead": overhead, "preprocessing": prep, "steps": steps}
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    app()
