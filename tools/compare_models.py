"""Paired comparison of two models on the same faces: is A really better than B?

    python tools/compare_models.py vgg-deep vgg            # bundled names or .onnx paths

For the validation split (the stratified 10% of Training that fer-train holds out) and PublicTest
it prints each model's accuracy, the faces only one of them gets right, the accuracy difference
with a 95% confidence interval, and McNemar's exact p-value. Pairing matters: two models scored on
the same faces agree on most of them, so only the faces where they disagree decide which is better,
and the uncertainty of the difference is not that of two independent accuracies. Selection stays
on validation; PublicTest is reported. A model exported from a ``fer-train --train-on-val`` run
trained on the validation faces: its validation comparison is skipped. ``--dedup`` adds PublicTest
without the faces that have a pixel-identical twin in Training (FER2013's known leak), and the twins
themselves, split by where the twin lies (the training part, or only the validation split).
"""

from __future__ import annotations

import argparse
import sys
from math import comb, sqrt
from typing import NamedTuple

import numpy as np


class Paired(NamedTuple):
    n: int
    acc_a: float
    acc_b: float
    only_a: int  # faces A gets right and B wrong
    only_b: int

    @property
    def diff(self) -> float:
        return (self.only_a - self.only_b) / self.n

    def ci95(self) -> tuple[float, float]:
        """Normal-approximation interval of the paired difference in accuracy."""
        p_a, p_b = self.only_a / self.n, self.only_b / self.n
        se = sqrt(max(p_a + p_b - (p_a - p_b) ** 2, 0.0) / self.n)
        return self.diff - 1.96 * se, self.diff + 1.96 * se

    def mcnemar_p(self) -> float:
        return mcnemar_exact(self.only_a, self.only_b)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test: the binomial test of the discordant faces against 1/2."""
    if only_a < 0 or only_b < 0:
        raise ValueError("counts must be non-negative")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def paired(right_a: np.ndarray, right_b: np.ndarray) -> Paired:
    right_a, right_b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    if right_a.shape != right_b.shape or right_a.ndim != 1 or not len(right_a):
        raise ValueError("need two equally long, non-empty 1-D arrays of per-face correctness")
    return Paired(len(right_a), float(right_a.mean()), float(right_b.mean()),
                  int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum()))


def has_duplicate_in(images: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each image, whether ``pool`` holds a pixel-identical one (FER2013 has 280 such PublicTest
    faces in Training: a model that trained on the twin may just remember it)."""
    seen = {img.tobytes() for img in pool}
    return np.fromiter((img.tobytes() in seen for img in images), bool, len(images))


def correct(rec, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-face correctness of an ``EmotionRecognizer``'s argmax (it chunks the batch itself)."""
    return rec.predict_proba(images).argmax(1) == labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Single crop, no flip TTA, the temperature does not change the argmax.")
    parser.add_argument("a", help="bundled model name or .onnx path")
    parser.add_argument("b", help="bundled model name or .onnx path")
    parser.add_argument("--data", help="FER2013 source (default: $FER2013_PATH, else ./data/fer2013 or "
                        "../shared/data/fer2013); validation is fer-train's default split (10%%, seed 0)")
    parser.add_argument("--dedup", action="store_true",
                        help="also compare on PublicTest without the faces that have a pixel-identical twin in "
                             "Training, and on those twins split by where the twin is (training part or validation)")
    args = parser.parse_args(argv)

    from fer_runtime import LABELS, EmotionRecognizer, FerError
    from fer_train.data import DataError, default_data_path, load_fer2013, make_splits

    try:
        rec_a = EmotionRecognizer(args.a, precision="named")
        rec_b = EmotionRecognizer(args.b, precision="named")  # bad names fail before the data loads
        for name, rec in ((args.a, rec_a), (args.b, rec_b)):
            if tuple(rec.labels) != tuple(LABELS):
                raise ValueError(f"{name} predicts {list(rec.labels)}, not FER2013's {list(LABELS)}")
        splits = make_splits(load_fer2013(args.data or default_data_path()))
        if splits.test is None:
            raise DataError("the data has no PublicTest rows")
        fitted = [name for name, rec in ((args.a, rec_a), (args.b, rec_b))
                  if rec.info.metadata.metrics.get("trained_on_val")]
        parts = [("val", splits.val.images, splits.val.labels), ("PublicTest", splits.test.images, splits.test.labels)]
        if args.dedup:
            in_val = has_duplicate_in(splits.test.images, splits.val.images)
            in_train = has_duplicate_in(splits.test.images, splits.train.images)
            clean = ~(in_val | in_train)
            for name, mask in (("PublicTest without Training twins", clean),
                               ("twins in the training part", in_train), ("twins only in validation", in_val & ~in_train)):
                if mask.any():
                    parts.append((name, splits.test.images[mask], splits.test.labels[mask]))
        for name, images, labels in parts:
            if name == "val" and fitted:
                print(f"{name:<10} skipped: {' and '.join(fitted)} trained on the validation faces (fer-train --train-on-val)")
                continue
            r = paired(correct(rec_a, images, labels), correct(rec_b, images, labels))
            lo, hi = r.ci95()
            print(f"{name:<10} n={r.n}: {args.a} {r.acc_a:.2%}, {args.b} {r.acc_b:.2%}; "
                  f"difference {r.diff:+.2%} (95% CI {lo:+.2%} to {hi:+.2%}); "
                  f"right only by {args.a}: {r.only_a}, only by {args.b}: {r.only_b}; McNemar exact p = {r.mcnemar_p():.3f}")
    except (FerError, ValueError, OSError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
