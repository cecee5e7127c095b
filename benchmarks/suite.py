"""fer-bench's two measurements: accuracy of every backend on the same tensors, and interleaved latency."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fer_bench.flops import count_flops, measure_peak_gflops
from fer_bench.stats import interleaved, paired_ratio, percentiles
from fer_runtime import preprocess
from fer_runtime.session import in_chunks

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 8, 32, 128, 256)
THREADS = (1, 2)
MODES = ("model", "end_to_end")


def run_accuracy(backends: Sequence[Any], images: np.ndarray, labels: np.ndarray, preprocess_config: Any,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Per backend: accuracy, macro-F1, per-class recall, argmax agreement and max |logit diff| vs PyTorch fp32.

    One preprocessed tensor (the runtime's NumPy preprocessing) feeds every backend.
    """
    from fer_train.metrics import classification_report

    x = preprocess(images, preprocess_config)
    reference = None
    results = {}
    for backend in backends:
        progress(f"accuracy: {backend.name}")
        backend.set_threads(None)
        logits = in_chunks(backend.logits, x, 256)
        if reference is None:  # the first backend is PyTorch fp32 on the CPU: the reference
            reference = logits
        report = classification_report(labels, logits.argmax(1))
        results[backend.name] = {
            "accuracy": report.accuracy,
            "macro_f1": report.macro_f1,
            "recall": report.recall,
            "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()),
        }
    return {"faces": len(labels), "backends": results}


def _time_once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()  # CUDA backends copy the result to the host inside, which synchronises
    return time.perf_counter() - t0


def run_latency(
    backends: Sequence[Any],
    twin: Any,
    preprocess_config: Any,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    thread_counts: Sequence[int] = THREADS,
    budget_s: float = 0.6,
    min_runs: int = 10,
    max_runs: int = 300,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Latency percentiles and throughput per backend, batch size, thread count and mode.

    Within each cell the backends run interleaved (A B C, A B C, ...) after a warm-up; the run
    count is sized so each cell takes about ``budget_s`` per backend. Speed-ups against PyTorch
    fp32 are medians of per-round ratios. FLOPs per image and the machine's matmul peak (measured
    here, per thread count) turn images/s into a fraction of the achievable peak.
    """
    rng = np.random.default_rng(0)
    flops = count_flops(twin, (1, 1, preprocess_config.size, preprocess_config.size))
    peaks: dict[str, float] = {}
    cells = []
    reference = backends[0].name
    for threads in thread_counts:
        progress(f"peak matmul, {threads} thread(s)")
        peaks[str(threads)] = measure_peak_gflops(threads)
        for b in backends:
            b.set_threads(threads)
        for bs in batch_sizes:
            raw = rng.integers(0, 256, (bs, preprocess_config.size, preprocess_config.size), dtype=np.uint8)
            x = preprocess(raw, preprocess_config)
            for mode in MODES:
                progress(f"latency: {threads} thread(s), batch {bs}, {mode.replace('_', '-')}")
                calls = {b.name: (lambda b=b: b.logits(x)) if mode == "model" else (lambda b=b: b.predict_proba(raw))
                         for b in backends}
                warm = {}
                for name, fn in calls.items():  # warm-up; also sizes the run count
                    for _ in range(2):
                        fn()
                    warm[name] = _time_once(fn)
                per_round = sum(warm.values())
                rounds = int(min(max_runs, max(min_runs, budget_s * len(calls) / max(per_round, 1e-6))))
                times: dict[str, list[float]] = {name: [] for name in calls}
                for _, name in interleaved(list(calls), rounds):
                    times[name].append(_time_once(calls[name]))
                for b in backends:
                    stats = percentiles(times[b.name])
                    ips = bs / (stats["p50_ms"] / 1e3)
                    gflops = flops * ips / 1e9
                    cells.append({
                        "backend": b.name, "device": b.device, "threads": threads, "batch": bs, "mode": mode, **stats,
                        "images_per_second": ips,
                        "speedup_vs_pytorch": paired_ratio(times[reference], times[b.name]),
                        "achieved_gflops": gflops,
                        "fraction_of_peak": gflops / peaks[str(threads)] if b.device == "cpu" else None,
                    })
    return {"flops_per_image": flops, "peak_gflops": peaks, "cells": cells, "reference": reference}
