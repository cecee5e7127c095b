"""Small, tested helpers for honest timing: percentiles, interleaved schedules, paired ratios."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence

import numpy as np


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 and mean, in milliseconds (linear interpolation between order statistics)."""
    if not seconds:
        raise ValueError("no timings")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean()), "runs": len(ms)}


def interleaved(names: Sequence[str], rounds: int, rng: np.random.Generator | None = None) -> Iterator[tuple[int, str]]:
    """(round, name) in the order A B C, A B C, ...: every contender runs once per round, so
    slow drift of the machine (other load, clocks) lands on all of them alike. With ``rng`` each
    round takes a fresh random order, so no contender always runs right after the same neighbour."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    for r in range(rounds):
        for k in (rng.permutation(len(names)) if rng is not None else range(len(names))):
            yield r, names[k]


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the per-round ratios numerator[i] / denominator[i] (rounds paired, not pooled)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired ratios need two equally long, non-empty series")
    return float(statistics.median(a / b for a, b in zip(numerator, denominator)))


def parse_int_list(text: str, name: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; every value a positive integer, else ValueError naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must be comma-separated positive integers, got {text!r}")
    return values
