"""FER+ votes (Barsoum et al. 2016, arXiv:1608.01041) as soft training targets.

Microsoft's ``fer2013new.csv`` has one row per ``fer2013.csv`` row, in the same order:
``Usage``, ``Image name`` and the votes of ten annotators over ``neutral, happiness,
surprise, sadness, anger, disgust, fear, contempt, unknown, NF``. Seven of those are
FER2013's classes; contempt, unknown and NF ("not a face") have no FER2013 class and are
dropped. A row keeps its FER+ distribution only when it has at least one vote for a
FER2013 class and its image name is unambiguous; every other row falls back to its
one-hot FER2013 label, so blending never invents a target.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_runtime import LABELS
from fer_train.data import DataError, FerData

log = logging.getLogger(__name__)

FERPLUS_ENV = "FERPLUS_PATH"
MIN_AGREEMENT = 0.45
MIN_ROWS_FOR_AGREEMENT_CHECK = 1000
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
# FER+ vote column -> FER2013 label index (0=Angry ... 6=Neutral).
_TO_FER2013 = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "sadness": 4, "surprise": 5, "neutral": 6}


@dataclass
class FerPlusVotes:
    usage: np.ndarray  # str (N,)
    names: np.ndarray  # str (N,), "" where FER+ wrote no image
    votes: np.ndarray  # int64 (N, 10), columns as FERPLUS_COLUMNS
    source: str

    def __len__(self) -> int:
        return len(self.usage)


def find_ferplus(data_source: str | Path) -> Path | None:
    """$FERPLUS_PATH, else a ``fer*new*.csv`` next to the FER2013 file (or in its folder)."""
    env = os.environ.get(FERPLUS_ENV)
    if env:
        return Path(env)
    src = Path(data_source)
    folder = src if src.is_dir() else src.parent
    found = sorted(folder.glob("fer*new*.csv"))
    return found[0] if found else None


def load_ferplus(path: str | Path) -> FerPlusVotes:
    """Parse a FER+ vote file; a malformed row raises :class:`DataError` naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such FER+ vote file (pass --ferplus or set {FERPLUS_ENV})")
    usage: list[str] = []
    names: list[str] = []
    votes: list[list[int]] = []
    with open(p, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        expected = ["Usage", "Image name", *FERPLUS_COLUMNS]
        if header is None or [h.strip() for h in header] != expected:
            raise DataError(f"{p}:1: not a FER+ vote file; expected the header {','.join(expected)}")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(expected):
                raise DataError(f"{p}:{line}: expected {len(expected)} fields, found {len(row)}")
            try:
                counts = [int(v) for v in row[2:]]
            except ValueError:
                raise DataError(f"{p}:{line}: vote counts must be integers, found {row[2:]}") from None
            if min(counts) < 0:
                raise DataError(f"{p}:{line}: negative vote count")
            usage.append(row[0].strip())
            names.append(row[1].strip())
            votes.append(counts)
    if not usage:
        raise DataError(f"{p}: no rows")
    return FerPlusVotes(np.asarray(usage), np.asarray(names), np.asarray(votes, dtype=np.int64), str(p))


def ferplus_distribution(data: FerData, votes: FerPlusVotes) -> tuple[np.ndarray, np.ndarray]:
    """Per-row FER+ class distribution over FER2013's labels, aligned with ``data``.

    Returns ``(dist, valid)``: float32 (N, 7) rows summing to 1, and a bool mask of the rows
    whose distribution comes from FER+ votes (the others hold the one-hot FER2013 label).
    Raises :class:`DataError` when the files are not row-aligned (count or Usage differ).
    """
    if len(votes) != len(data):
        raise DataError(f"{votes.source} has {len(votes)} rows but {data.source} has {len(data)}: "
                        "the vote file must be row-aligned with the FER2013 file")
    mismatch = np.flatnonzero(votes.usage != data.usage)
    if len(mismatch):
        i = int(mismatch[0])
        raise DataError(f"{votes.source}:{i + 2}: Usage {str(votes.usage[i])!r} but row {i} of {data.source} is "
                        f"{str(data.usage[i])!r}; the files are not row-aligned")
    mapped = np.zeros((len(data), len(LABELS)), dtype=np.float64)
    for column, label in _TO_FER2013.items():
        mapped[:, label] = votes.votes[:, FERPLUS_COLUMNS.index(column)]
    total = mapped.sum(1)
    valid = total > 0
    # An image name used by several rows is trusted only if those rows hold the same pixels:
    # otherwise the votes belong to one of them and we cannot tell which.
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(votes.names):
        if name:
            groups[name].append(i)
    for rows in groups.values():
        if len(rows) > 1 and any(not np.array_equal(data.images[rows[0]], data.images[r]) for r in rows[1:]):
            valid[rows] = False
    dist = np.eye(len(LABELS), dtype=np.float64)[data.labels]
    dist[valid] = mapped[valid] / total[valid, None]
    return dist.astype(np.float32), valid


def blend_targets(labels: np.ndarray, dist: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * one_hot(labels) + weight * dist`` as float32 (N, 7)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"soft-label weight must be in [0, 1], got {weight}")
    one_hot = np.eye(dist.shape[1], dtype=np.float32)[labels]
    return ((1.0 - weight) * one_hot + weight * dist).astype(np.float32)


def resolve_ferplus(ferplus: str | Path | None, data_source: str | Path) -> Path:
    """The vote file to use: ``ferplus`` if given, else :func:`find_ferplus`; DataError if none."""
    path = Path(ferplus) if ferplus else find_ferplus(data_source)
    if path is None:
        raise DataError(f"soft labels need the FER+ vote file: none found next to {data_source}; "
                        f"pass --ferplus PATH or set {FERPLUS_ENV}")
    return path


def attach_soft_targets(data: FerData, path: Path, weight: float) -> FerData:
    """``data`` with ``soft`` set to the blended FER+/FER2013 targets (logs how many rows use FER+)."""
    dist, valid = ferplus_distribution(data, load_ferplus(path))
    agree = float((dist[valid].argmax(1) == data.labels[valid]).mean()) if valid.any() else 0.0
    # Aligned files agree on about 64% of the faces; shuffled rows would agree at chance level
    # (about 20%). Row count and Usage cannot catch a reordering within a Usage block: this can.
    if valid.sum() >= MIN_ROWS_FOR_AGREEMENT_CHECK and agree < MIN_AGREEMENT:
        raise DataError(f"{path}: the FER+ majority vote agrees with the FER2013 label on only {100 * agree:.1f}% "
                        f"of {int(valid.sum())} faces (about 64% when aligned): the files look misaligned")
    log.info("FER+ soft targets from %s: %d of %d rows (the rest keep one-hot labels); majority agrees with "
             "the FER2013 label on %.1f%% of them; weight %.2f", path, int(valid.sum()), len(data), 100 * agree, weight)
    data.soft = blend_targets(data.labels, dist, weight)
    return data
