"""Test-time augmentation: choose the multi-crop views on validation, report PublicTest and cost.

    OPENBLAS_NUM_THREADS=1 python experiments/tta_selection.py -o benchmarks/results/tta
    OPENBLAS_NUM_THREADS=1 python experiments/tta_selection.py -o benchmarks/results/tta --cost-only
    python experiments/tta_selection.py -o benchmarks/results/tta --report-only

1. Candidates (crops resized back, or the face shifted by 1-2 px, each with its mirror image) are scored on the validation split
   (stratified 10% of Training, seed 0) with the shipped models that held validation out
   (`vgg`, `vgg-medium`); the best mean accuracy becomes the "crops" mode. The final fits
   (`vgg-deep`, `vgg-taper`) trained on those faces, so they take no part in the choice.
2. Every mode is then reported on PublicTest (3,589 faces) for the shipped models and the
   ensemble of vgg-deep, vgg and vgg-taper, with the per-face cost: `predict_proba` on one
   170x150 face crop, preprocessing included, 2 ONNX Runtime threads, rounds of all settings
   interleaved (OpenBLAS held to one thread: its idle threads spin and slow the NumPy steps on a
   busy 2-core machine). `--cost-only` re-measures just the cost; `--report-only` re-reads just
   the PublicTest accuracies (after new weights ship under a reported name: the graphs, and so the
   cost, are unchanged), keeping the validation choice and the cost of OUT/tta.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from fer_bench.env import describe, environment
from fer_runtime import EmotionRecognizer, load_image, preprocess
from fer_runtime.tta import TTA_MODES, Views
from fer_train.data import default_data_path, load_fer2013, make_splits

HELD_OUT = ("vgg", "vgg-medium")  # shipped models whose training never saw the validation faces
# Crops resized back (five, 2 px smaller: the best of five/nine x 2/4 px in a first run, all below flip alone on
# vgg's validation faces: 69.50-69.64% against 70.54%) and shifted views (edges repeated, no rescaling).
CANDIDATES = {"five-2px-resized-flip": Views(2, "five", True),
              **{f"{pos}-shift{margin // 2}px-flip": Views(margin, pos, True, resize=False)
                 for pos, margin in (("five", 2), ("five", 4), ("nine", 2))}}
REPORTED = ("vgg-deep", "vgg-deep-int8", "vgg-taper-int8")
ENSEMBLE = ("vgg-deep", "vgg", "vgg-taper")
PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos" / "astronaut.jpg"


def accuracy(rec: EmotionRecognizer, x: np.ndarray, labels: np.ndarray, views: Views) -> float:
    rec.views = views
    return float((rec.probabilities(x).argmax(1) == labels).mean())


def choose(val_x: np.ndarray, val_y: np.ndarray) -> dict:
    table = {}
    for model in HELD_OUT:
        rec = EmotionRecognizer(model, precision="named")
        assert not rec.info.metadata.metrics.get("trained_on_val"), model
        table[model] = {"single": accuracy(rec, val_x, val_y, TTA_MODES["none"]),
                        "flip": accuracy(rec, val_x, val_y, TTA_MODES["flip"]),
                        **{name: accuracy(rec, val_x, val_y, v) for name, v in CANDIDATES.items()}}
        print(model, {k: round(100 * v, 2) for k, v in table[model].items()}, flush=True)
    means = {name: statistics.mean(table[m][name] for m in HELD_OUT) for name in CANDIDATES}
    best = max(means, key=means.get)
    return {"validation": table, "mean_by_candidate": means, "chosen": best, "views": vars(CANDIDATES[best])}


def modes(chosen: Views) -> dict[str, Views]:
    """The runtime's modes, with "crops" as chosen here (the runtime's own must be the same: checked)."""
    if TTA_MODES["crops"] != chosen:
        print(f"note: fer_runtime.tta.TTA_MODES['crops'] is {TTA_MODES['crops']}, validation chose {chosen}: "
              "update it", flush=True)
    return {**TTA_MODES, "crops": chosen}


def report(test_x: np.ndarray, test_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, chosen: Views) -> dict:
    out = {}
    settings = [(m, (m,)) for m in REPORTED] + [("ensemble: " + " + ".join(ENSEMBLE), ENSEMBLE)]
    for name, members in settings:
        rec = EmotionRecognizer(ensemble=list(members), precision="named")
        held_out = len(members) == 1 and not rec.info.metadata.metrics.get("trained_on_val")
        out[name] = {mode: {"public_test": accuracy(rec, test_x, test_y, views),
                            "validation": accuracy(rec, val_x, val_y, views) if held_out else None,
                            "passes_per_face": views.count * len(members)}
                     for mode, views in modes(chosen).items()}
        print(name, {k: round(100 * v["public_test"], 2) for k, v in out[name].items()}, flush=True)
    return out


def cost(chosen: Views, rounds: int = 60, calls: int = 20) -> dict:
    """Per-face ms of predict_proba on one face crop: each setting's median over interleaved rounds."""
    photo = load_image(PHOTO)
    face = photo[60:230, 70:220]  # 170 x 150
    recs = {}
    for model in ("vgg-deep", "vgg-deep-int8", "vgg-taper-int8"):
        for mode, views in modes(chosen).items():
            recs[f"{model}, {mode}"] = EmotionRecognizer(model, tta=views, threads=2, precision="named")
    recs["ensemble, flip"] = EmotionRecognizer(ensemble=list(ENSEMBLE), tta="flip", threads=2, precision="fp32")
    samples: dict[str, list[float]] = {k: [] for k in recs}
    for rec in recs.values():
        rec.predict_proba(face)  # warm-up
    for _ in range(rounds):
        for key, rec in recs.items():
            start = time.perf_counter()
            for _ in range(calls):
                rec.predict_proba(face)
            samples[key].append(1000 * (time.perf_counter() - start) / calls)
    return {k: {"median_ms": statistics.median(v), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90))} for k, v in samples.items()}


def markdown(result: dict) -> str:
    lines = [f"Environment: {describe(result['environment'])}", "",
             *([f"Cost measured in: {describe(result['cost_environment'])}", ""] if "cost_environment" in result
               else []),
             "Validation accuracy (held-out models) per candidate:", "",
             "| candidate | " + " | ".join(result["selection"]["validation"]) + " | mean |",
             "|---|" + "---|" * (len(result["selection"]["validation"]) + 1),
             *(f"| {name} | " + " | ".join(f"{100 * t[name]:.2f}%" for t in result["selection"]["validation"].values())
               + (f" | {100 * result['selection']['mean_by_candidate'][name]:.2f}% |"
                  if name in result["selection"]["mean_by_candidate"] else " | - |")
               for name in next(iter(result["selection"]["validation"].values()))), "",
             f"Chosen crops: {result['selection']['chosen']} ({result['selection']['views']})", "",
             "| model | mode | passes/face | validation | PublicTest |", "|---|---|---|---|---|"]
    for name, modes in result["report"].items():
        for mode, r in modes.items():
            val = "-" if r["validation"] is None else f"{100 * r['validation']:.2f}%"
            lines.append(f"| {name} | {mode} | {r['passes_per_face']} | {val} | {100 * r['public_test']:.2f}% |")
    lines += ["", "| setting | per face, median ms (p10-p90) |", "|---|---|"]
    lines += [f"| {k} | {v['median_ms']:.2f} ({v['p10_ms']:.2f}-{v['p90_ms']:.2f}) |" for k, v in result["cost"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results/tta"))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--cost-only", action="store_true",
                        help="Re-measure only the per-face cost, into the existing OUT/tta.json.")
    parser.add_argument("--report-only", action="store_true",
                        help="Re-read only the PublicTest (and held-out validation) accuracies, into the existing "
                             "OUT/tta.json; the validation choice and the cost are kept.")
    args = parser.parse_args()
    if args.cost_only and args.report_only:
        parser.error("--cost-only and --report-only exclude each other")
    if args.cost_only:
        result = json.loads((args.out / "tta.json").read_text())
        result["cost_environment"] = environment()
        result["cost"] = cost(CANDIDATES[result["selection"]["chosen"]])
        _write(args.out, result)
        return
    splits = make_splits(load_fer2013(args.data or default_data_path()))
    val_x, val_y = preprocess(splits.val.images), splits.val.labels
    test_x, test_y = preprocess(splits.test.images), splits.test.labels
    if args.report_only:
        result = json.loads((args.out / "tta.json").read_text())
        result["cost_environment"] = result.get("cost_environment", result["environment"])
        result["environment"] = environment()
        result["report"] = report(test_x, test_y, val_x, val_y, CANDIDATES[result["selection"]["chosen"]])
        _write(args.out, result)
        return
    result = {"environment": environment(), "selection": choose(val_x, val_y)}
    chosen = CANDIDATES[result["selection"]["chosen"]]
    result["report"] = report(test_x, test_y, val_x, val_y, chosen)
    result["cost"] = cost(chosen)
    _write(args.out, result)


def _write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tta.json").write_text(json.dumps(result, indent=1))
    (out / "tta.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
