"""FER2013 loading: every format, every malformed case, the cache and the splits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fer_train import data as data_mod
from fer_train.data import DataError, load_fer2013, make_splits, stratified_split


def _rows(n: int, rng: np.random.Generator, usage: bool = True) -> tuple[list[str], np.ndarray, np.ndarray]:
    faces = rng.integers(0, 256, (n, 48, 48)).astype(np.uint8)
    labels = np.arange(n) % 7
    lines = []
    for i in range(n):
        cols = [str(labels[i]), " ".join(map(str, faces[i].ravel()))]
        if usage:
            cols.append("Training" if i < n - 3 else "PublicTest")
        lines.append(",".join(cols))
    return lines, faces, labels


def _write(path: Path, header: str, lines: list[str]) -> Path:
    text = "\n".join([header, *lines]) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["fer2013.csv", "fer2013.csv.gz"])
def test_kaggle_full_csv_plain_and_gzipped(tmp_path, rng, name):
    lines, faces, labels = _rows(10, rng)
    d = load_fer2013(_write(tmp_path / name, "emotion,pixels,Usage", lines))
    np.testing.assert_array_equal(d.images, faces)
    np.testing.assert_array_equal(d.labels, labels)
    assert list(d.usage) == ["Training"] * 7 + ["PublicTest"] * 3
    assert d.images.dtype == np.uint8 and d.images.shape == (10, 48, 48)


def test_directory_resolves_to_the_csv(tmp_path, rng):
    lines, faces, _ = _rows(4, rng)
    _write(tmp_path / "fer2013.csv", "emotion,pixels,Usage", lines)
    np.testing.assert_array_equal(load_fer2013(tmp_path).images, faces)


def test_kaggle_challenge_train_csv_gets_a_deterministic_stratified_split(tmp_path, rng):
    lines, faces, labels = _rows(70, rng, usage=False)
    path = _write(tmp_path / "train.csv", "emotion,pixels", lines)
    a = load_fer2013(path, cache=False, split_seed=3)
    b = load_fer2013(path, cache=False, split_seed=3)
    np.testing.assert_array_equal(a.usage, b.usage)
    test_labels = a.labels[a.usage == "PublicTest"]
    assert np.bincount(test_labels, minlength=7).tolist() == [1] * 7  # 10% of each class of 10
    c = load_fer2013(path, cache=False, split_seed=4)
    assert not np.array_equal(a.usage, c.usage)


def test_image_folder_tree(tmp_path, rng):
    from PIL import Image

    faces = rng.integers(0, 256, (3, 48, 48)).astype(np.uint8)
    for i, (split, cls) in enumerate([("train", "happy"), ("train", "Sad"), ("test", "angry")]):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(faces[i]).save(tmp_path / split / cls / f"{i}.png")
    big = rng.integers(0, 256, (96, 96, 3)).astype(np.uint8)  # other sizes go through preprocessing
    Image.fromarray(big).save(tmp_path / "test" / "angry" / "big.png")
    (tmp_path / "test" / "angry" / "notes.txt").write_text("ignored")
    d = load_fer2013(tmp_path)
    assert d.images.shape == (4, 48, 48)
    assert sorted(d.labels.tolist()) == [0, 0, 3, 4]
    assert set(d.usage) == {"Training", "PublicTest"}
    from fer_runtime import faces_to_uint8

    i_big = int(np.flatnonzero(d.usage == "PublicTest")[1])  # files load in sorted order: 2.png, big.png
    np.testing.assert_array_equal(d.images[i_big], faces_to_uint8(big)[0])


def test_image_folder_errors(tmp_path):
    (tmp_path / "train" / "joy").mkdir(parents=True)
    with pytest.raises(DataError, match="unknown class folder"):
        load_fer2013(tmp_path)
    (tmp_path / "train" / "joy").rmdir()
    with pytest.raises(DataError, match="no images"):
        load_fer2013(tmp_path)
    (tmp_path / "train" / "happy").mkdir()
    (tmp_path / "train" / "happy" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png: not a readable image"):
        load_fer2013(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match="unknown split folder"):
        load_fer2013(tmp_path)


def _corrupt(lines: list[str], row: int, field: int, value: str) -> list[str]:
    cols = lines[row].split(",")
    cols[field] = value
    return [*lines[:row], ",".join(cols), *lines[row + 1 :]]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (1, " ".join(["7"] * 2303), r"fer2013.csv line 4: expected 2304 pixel values, got 2303"),
        (1, " ".join(["7"] * 2305), r"line 4: expected 2304 pixel values, got 2305"),
        (1, " ".join(["7"] * 2303 + ["256"]), r"line 4: pixel value 256 outside 0-255"),
        (1, " ".join(["-1"] + ["7"] * 2303), r"line 4: pixel value -1 outside 0-255"),
        (1, " ".join(["7"] * 2303 + ["x"]), r"line 4: non-integer pixel value 'x'"),
        (0, "7", r"line 4: label must be 0-6, got '7'"),
        (0, "-1", r"line 4: label must be 0-6"),
        (2, "Validation", r"line 4: unknown Usage 'Validation'"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, rng, field, value, message):
    lines, _, _ = _rows(5, rng)
    path = _write(tmp_path / "fer2013.csv", "emotion,pixels,Usage", _corrupt(lines, 2, field, value))
    with pytest.raises(DataError, match=message):
        load_fer2013(path)


def test_missing_file_wrong_header_and_empty(tmp_path, rng):
    with pytest.raises(DataError, match="no such file"):
        load_fer2013(tmp_path / "nope.csv")
    lines, _, _ = _rows(2, rng)
    with pytest.raises(DataError, match="line 1: expected header"):
        load_fer2013(_write(tmp_path / "a.csv", "label,pixels,Usage", lines))
    with pytest.raises(DataError, match="no data rows"):
        load_fer2013(_write(tmp_path / "b.csv", "emotion,pixels,Usage", []))
    (tmp_path / "c.csv").write_bytes(b"")
    with pytest.raises(DataError, match="c.csv"):
        load_fer2013(tmp_path / "c.csv")
    (tmp_path / "d.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="d.csv.gz"):
        load_fer2013(tmp_path / "d.csv.gz")


def test_second_load_comes_from_the_cache(tmp_path, rng, monkeypatch):
    lines, faces, _ = _rows(6, rng)
    path = _write(tmp_path / "fer2013.csv", "emotion,pixels,Usage", lines)
    first = load_fer2013(path)
    assert list((tmp_path / "cache").glob("fer2013-*.npz"))

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again instead of using the cache")

    monkeypatch.setattr(data_mod, "_parse_csv", no_parse)
    second = load_fer2013(path)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.usage, first.usage)
    # A changed source file has another hash, so a stale cache is never used.
    path.write_text(path.read_text().replace(",Training", ",PublicTest", 1))
    with pytest.raises(AssertionError, match="parsed again"):
        load_fer2013(path)


def test_damaged_cache_is_rebuilt(tmp_path, rng):
    lines, faces, _ = _rows(3, rng)
    path = _write(tmp_path / "fer2013.csv", "emotion,pixels,Usage", lines)
    load_fer2013(path)
    cache_file = next((tmp_path / "cache").glob("*.npz"))
    cache_file.write_bytes(b"junk")
    np.testing.assert_array_equal(load_fer2013(path).images, faces)


def test_stratified_split_properties():
    labels = np.repeat(np.arange(7), [100, 10, 50, 200, 60, 40, 80])
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)
    assert np.bincount(labels[held]).tolist() == [10, 1, 5, 20, 6, 4, 8]
    np.testing.assert_array_equal(held, stratified_split(labels, 0.1, seed=0)[1])
    with pytest.raises(ValueError):
        stratified_split(labels, 1.5, seed=0)


def test_stratified_subset_is_exact_and_proportional():
    from fer_train.data import stratified_subset

    labels = np.repeat(np.arange(7), [100, 10, 50, 200, 60, 40, 80])
    idx = stratified_subset(labels, 54, seed=1)
    assert len(idx) == 54 == len(np.unique(idx))
    assert np.bincount(labels[idx]).tolist() == [10, 1, 5, 20, 6, 4, 8]
    np.testing.assert_array_equal(idx, stratified_subset(labels, 54, seed=1))
    with pytest.raises(ValueError):
        stratified_subset(labels, 0, seed=1)


@pytest.mark.data
def test_real_fer2013_counts_and_splits(fer_data):
    assert np.bincount(fer_data.labels[fer_data.usage == "Training"]).tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert np.bincount(fer_data.labels[fer_data.usage == "PublicTest"]).tolist() == [467, 56, 496, 895, 653, 415, 607]
    splits = make_splits(fer_data)
    assert len(splits.val) == 2872 and len(splits.train) == 28709 - 2872 and len(splits.test) == 3589
    assert splits.describe()["sha256"] == fer_data.sha256
    with pytest.raises(DataError, match="no PrivateTest rows"):
        fer_data.split("PrivateTest")
