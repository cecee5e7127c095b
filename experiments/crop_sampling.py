"""How finely rotated face crops are sampled: accuracy on validation scenes and detect latency.

Compares the sampler before commit aa954b7 (every pixel up to 191 px a side; read from git
history, so the checkout must have it), the same with detail=48, and the current one (at most 96
points a side). Run from the checkout root: python experiments/crop_sampling.py [--timing-only]
Results are printed; experiments/LOG.md quotes them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import types

import fer_bench.detection as detection
import fer_runtime.frames as frames
import fer_runtime.pipeline as pipeline


def old_sampler() -> types.FunctionType:
    source = subprocess.run(["git", "show", "aa954b7^:fer_runtime/frames.py"], capture_output=True, text=True,
                            check=True).stdout
    module = types.ModuleType("frames_before_aa954b7")
    exec(compile(source, module.__name__, "exec"), module.__dict__)  # noqa: S102
    return module.crop_gray


def use(sampler) -> None:
    pipeline.crop_gray = detection.crop_gray = sampler


def accuracy(variants: dict) -> None:
    from fer_runtime import EmotionRecognizer, FaceDetector
    from fer_train.data import load_fer2013, make_splits

    val = make_splits(load_fer2013(None)).val
    classifiers = {m: EmotionRecognizer(m, precision="fp32") for m in ("vgg", "vgg-medium")}
    for name, sampler in variants.items():
        use(sampler)
        r = detection.crop_study(val.images, val.labels, classifiers, FaceDetector(), detection.REPORT_GRID[:1], seed=0)
        scores = {m: round(100 * next(iter(c["framings"].values())), 2) for m, c in r["classifiers"].items()}
        print(f"{name}: {r['detected']} of {r['faces']} detected, default framing {scores}", flush=True)


def timing(variants: dict, blocks: int = 12, calls: int = 30) -> None:
    from fer_bench.detection import one_face_frame
    from fer_runtime import EmotionRecognizer, FaceDetector

    frame = one_face_frame()
    rec = EmotionRecognizer("vgg-taper-int8", threads=2, detector=FaceDetector(threads=2))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(30):
        rec.detect(frame)
    for _ in range(blocks):  # interleaved
        for name, sampler in variants.items():
            use(sampler)
            for _ in range(calls):
                start = time.perf_counter()
                rec.detect(frame)
                times[name].append(1000 * (time.perf_counter() - start))
    for name, xs in times.items():
        print(f"{name}: detect 640x480 one face, vgg-taper-int8, 2 threads: p50 {statistics.median(xs):.2f} ms")


if __name__ == "__main__":
    before = old_sampler()
    variants = {"every pixel (before)": before, "current (96 points)": frames.crop_gray}
    timing(variants)
    if "--timing-only" not in sys.argv:
        accuracy({**variants, "before, detail=48": lambda *a, **k: before(*a, detail=48)})
