"""FER2013 loading: Kaggle CSVs (plain or gzipped), Kaggle's challenge train.csv, image folders.

Every source becomes a :class:`FerData`: uint8 faces (N, 48, 48), labels 0..6 and a
usage name per row (Training / PublicTest / PrivateTest). Parsed CSVs are cached as
``.npz`` files keyed by the source file's sha256, so a second load is fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_runtime import LABELS, faces_to_uint8

log = logging.getLogger(__name__)

PIXELS = 48 * 48
USAGES = ("Training", "PublicTest", "PrivateTest")
DATA_ENV = "FER2013_PATH"
CACHE_ENV = "FER_CACHE_DIR"
_CACHE_VERSION = 1
# Folder-tree split names (msambare/Kaggle image folders use train/test).
_FOLDER_USAGE = {
    "train": "Training",
    "training": "Training",
    "val": "PublicTest",
    "valid": "PublicTest",
    "publictest": "PublicTest",
    "test": "PublicTest",
    "privatetest": "PrivateTest",
}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm"}


class DataError(ValueError):
    """The dataset is missing or malformed; the message names the file (and line)."""


@dataclass
class FerData:
    images: np.ndarray  # uint8 (N, 48, 48)
    labels: np.ndarray  # int64 (N,)
    usage: np.ndarray  # str (N,)
    source: str  # file or folder it came from
    sha256: str  # of the source file (or of the decoded arrays, for folders)
    soft: np.ndarray | None = None  # float32 (N, 7) soft training targets (see fer_train.ferplus), or None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask_or_index: np.ndarray) -> FerData:
        return FerData(
            self.images[mask_or_index],
            self.labels[mask_or_index],
            self.usage[mask_or_index],
            self.source,
            self.sha256,
            None if self.soft is None else self.soft[mask_or_index],
        )

    def concat(self, other: FerData) -> FerData:
        """These rows followed by ``other``'s (same source; soft targets kept only if both have them)."""
        if (self.source, self.sha256) != (other.source, other.sha256):
            raise ValueError(f"cannot join rows of {self.source} and {other.source}")
        soft = None if self.soft is None or other.soft is None else np.concatenate([self.soft, other.soft])
        return FerData(np.concatenate([self.images, other.images]), np.concatenate([self.labels, other.labels]),
                       np.concatenate([self.usage, other.usage]), self.source, self.sha256, soft)

    def split(self, usage: str) -> FerData:
        if usage not in USAGES:
            raise ValueError(f"unknown usage {usage!r}; valid: {', '.join(USAGES)}")
        part = self.subset(self.usage == usage)
        if len(part) == 0:
            raise DataError(f"{self.source}: no {usage} rows")
        return part


def default_data_path() -> Path:
    """$FER2013_PATH, else ./data/fer2013 or ../shared/data/fer2013 if present."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    for cand in (Path("data/fer2013"), Path("../shared/data/fer2013")):
        if cand.exists():
            return cand
    raise DataError(
        f"no FER2013 data found: pass --data PATH or set {DATA_ENV} to fer2013.csv(.gz), "
        "Kaggle's train.csv or an image-folder tree (<split>/<class>/*.png)"
    )


def resolve_csv(path: Path) -> Path:
    """A directory holding exactly one fer2013*.csv(.gz) / train.csv resolves to that file."""
    if path.is_file():
        return path
    for pattern in ("fer2013*.csv.gz", "fer2013*.csv", "train.csv"):
        found = sorted(path.glob(pattern))
        if found:
            return found[0]
    return path


def load_fer2013(
    path: str | Path | None = None,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    split_seed: int = 0,
    test_fraction: float = 0.1,
) -> FerData:
    """Load FER2013 from any supported source (see module docstring).

    Kaggle's challenge ``train.csv`` has no Usage column: its rows are then split into
    Training / PublicTest deterministically and stratified by label (``split_seed``,
    ``test_fraction``).
    """
    p = Path(path) if path is not None else default_data_path()
    if not p.exists():
        raise DataError(f"{p}: no such file or directory (set {DATA_ENV} or pass --data)")
    if p.is_dir():
        csv = resolve_csv(p)
        if csv == p:
            return _load_folder(p)
        p = csv
    digest = file_sha256(p)
    cache_file = _cache_path(cache_dir, digest) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                log.debug("loaded %s from cache %s", p, cache_file)
                return FerData(z["images"], z["labels"], z["usage"].astype(str), str(p), digest)
        except (OSError, ValueError, KeyError) as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("ignoring unreadable cache %s (%s)", cache_file, exc)
    images, labels, usage = _parse_csv(p, split_seed, test_fraction)
    if cache_file is not None:
        _write_cache(cache_file, images, labels, usage)
    return FerData(images, labels, usage, str(p), digest)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_path(cache_dir: str | Path | None, digest: str) -> Path:
    root = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fer-edge")
    return root / f"fer2013-{digest[:24]}-v{_CACHE_VERSION}.npz"


def _write_cache(cache_file: Path, images: np.ndarray, labels: np.ndarray, usage: np.ndarray) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, usage=usage.astype("U11"))
        os.replace(tmp, cache_file)
    except OSError as exc:  # caching is an optimisation; a read-only home must not break loading
        log.warning("could not write cache %s (%s)", cache_file, exc)


def _parse_csv(path: Path, split_seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import pandas as pd

    name = path.name
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, EOFError) as exc:
        raise DataError(f"{name}: cannot read ({exc})") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: not a FER2013 CSV ({exc})") from exc
    cols = [c.strip() for c in df.columns]
    if cols[:2] != ["emotion", "pixels"] or len(cols) not in (2, 3) or (len(cols) == 3 and cols[2] != "Usage"):
        raise DataError(f"{name} line 1: expected header 'emotion,pixels[,Usage]', got {','.join(cols)!r}")
    if len(df) == 0:
        raise DataError(f"{name}: no data rows")
    df.columns = cols

    labels = np.empty(len(df), dtype=np.int64)
    for i, raw in enumerate(df["emotion"].to_numpy()):
        value = raw.strip()
        if not (value.isascii() and value.isdigit()) or int(value) >= len(LABELS):  # "²".isdigit() too
            raise DataError(f"{name} line {i + 2}: label must be 0-{len(LABELS) - 1}, got {raw!r}")
        labels[i] = int(value)

    images = np.empty((len(df), PIXELS), dtype=np.uint8)
    with warnings.catch_warnings():
        # fromstring stops early on junk (a warning in older NumPy, an error in newer); either way
        # the row is re-read slowly to say exactly what is wrong with it.
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, text in enumerate(df["pixels"].to_numpy()):
            try:
                row = np.fromstring(text, dtype=np.int64, sep=" ")
            except ValueError:
                row = np.empty(0, dtype=np.int64)
            if row.size != PIXELS:
                raise DataError(f"{name} line {i + 2}: {_describe_bad_pixels(text)}")
            if row.min() < 0 or row.max() > 255:
                bad = row[(row < 0) | (row > 255)][0]
                raise DataError(f"{name} line {i + 2}: pixel value {bad} outside 0-255")
            images[i] = row
    images = images.reshape(-1, 48, 48)

    if "Usage" in df.columns:
        usage = df["Usage"].str.strip().to_numpy().astype("U11")
        unknown = ~np.isin(usage, USAGES)
        if unknown.any():
            i = int(np.argmax(unknown))
            raise DataError(
                f"{name} line {i + 2}: unknown Usage {df['Usage'].iloc[i]!r}; expected one of {', '.join(USAGES)}"
            )
    else:
        usage = np.full(len(df), "Training", dtype="U11")
        usage[stratified_split(labels, test_fraction, split_seed)[1]] = "PublicTest"
    return images, labels, usage


def _describe_bad_pixels(text: str) -> str:
    tokens = text.split()
    for tok in tokens:
        try:
            int(tok)
        except ValueError:
            return f"non-integer pixel value {tok!r}"
    return f"expected {PIXELS} pixel values, got {len(tokens)}"


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split -> (keep_idx, held_idx); ``fraction`` of each class is held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        held.append(idx[: int(round(len(idx) * fraction))])
    held_idx = np.sort(np.concatenate(held))
    keep = np.ones(len(labels), dtype=bool)
    keep[held_idx] = False
    return np.flatnonzero(keep), held_idx


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Exactly ``n`` indices (sorted) with class proportions kept (largest-remainder rounding)."""
    if not 0 < n <= len(labels):
        raise ValueError(f"subset size must be in 1..{len(labels)}, got {n}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def _load_folder(root: Path) -> FerData:
    from PIL import Image, UnidentifiedImageError

    class_index = {name.lower(): i for i, name in enumerate(LABELS)}
    images, labels, usage = [], [], []
    for split_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        split_usage = _FOLDER_USAGE.get(split_dir.name.lower())
        if split_usage is None:
            raise DataError(
                f"{split_dir}: unknown split folder; expected one of {', '.join(sorted(_FOLDER_USAGE))}"
            )
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            label = class_index.get(class_dir.name.lower())
            if label is None:
                raise DataError(f"{class_dir}: unknown class folder; expected one of {', '.join(LABELS)}")
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(f) as im:
                        arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
                except (OSError, UnidentifiedImageError) as exc:
                    raise DataError(f"{f}: not a readable image ({exc})") from exc
                images.append(faces_to_uint8(arr)[0])
                labels.append(label)
                usage.append(split_usage)
    if not images:
        raise DataError(f"{root}: no images found (expected <split>/<class>/*.png|jpg)")
    arr = np.stack(images)
    lab = np.asarray(labels, dtype=np.int64)
    digest = hashlib.sha256(arr.tobytes() + lab.tobytes()).hexdigest()
    return FerData(arr, lab, np.asarray(usage, dtype="U11"), str(root), digest)


@dataclass
class Splits:
    """Training minus validation, validation (stratified 10% of Training), test (PublicTest)."""

    train: FerData
    val: FerData
    test: FerData | None
    soft_source: str | None = None  # FER+ vote file behind train.soft, if any
    val_in_train: bool = False  # train also holds the val rows (fer-train --train-on-val: the final fit)

    def describe(self) -> dict[str, object]:
        extra: dict[str, object] = {}
        if self.soft_source:
            extra = {"soft_targets": Path(self.soft_source).name, "soft_targets_sha256": file_sha256(Path(self.soft_source))}
        return {
            "source": Path(self.train.source).name,
            "sha256": self.train.sha256,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test) if self.test is not None else 0,
            "train_class_counts": np.bincount(self.train.labels, minlength=len(LABELS)).tolist(),
            **({"val_in_train": True} if self.val_in_train else {}),
            **extra,
        }


def make_splits(data: FerData, val_fraction: float = 0.1, split_seed: int = 0) -> Splits:
    training = data.split("Training")
    keep, held = stratified_split(training.labels, val_fraction, split_seed)
    test = data.subset(data.usage == "PublicTest")
    return Splits(training.subset(keep), training.subset(held), test if len(test) else None)
