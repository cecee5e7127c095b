"""FER+ votes as soft targets: parsing, alignment checks, mapping to FER2013 labels, blending."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_train.data import DataError, FerData, make_splits
from fer_train.ferplus import (
    FERPLUS_COLUMNS,
    attach_soft_targets,
    blend_targets,
    ferplus_distribution,
    find_ferplus,
    load_ferplus,
    resolve_ferplus,
)

HEADER = "Usage,Image name," + ",".join(FERPLUS_COLUMNS)


def _votes_file(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "fer2013new.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _data(n: int, labels: list[int], usage: list[str], images: np.ndarray | None = None) -> FerData:
    if images is None:
        images = np.arange(n, dtype=np.uint8)[:, None, None].repeat(48, 1).repeat(48, 2)
    return FerData(images, np.asarray(labels, dtype=np.int64), np.asarray(usage), "synthetic.csv", "0" * 64)


def test_votes_map_onto_fer2013_labels_and_unusable_rows_fall_back_to_one_hot(tmp_path):
    path = _votes_file(tmp_path, [
        "Training,fer0.png,4,0,0,1,3,2,0,0,0,0",   # neutral 4, sadness 1, anger 3, disgust 2
        "Training,fer1.png,0,0,0,0,0,0,0,3,2,5",   # contempt/unknown/NF only: no FER2013 class
        "PublicTest,,0,0,0,0,0,0,0,0,0,10",        # blank name (not a face)
        "PublicTest,fer3.png,0,10,0,0,0,0,0,0,0,0",
    ])
    data = _data(4, [0, 5, 6, 3], ["Training", "Training", "PublicTest", "PublicTest"])
    dist, valid = ferplus_distribution(data, load_ferplus(path))
    assert valid.tolist() == [True, False, False, True]
    np.testing.assert_allclose(dist[0], [0.3, 0.2, 0, 0, 0.1, 0, 0.4])  # Angry Disgust Fear Happy Sad Surprise Neutral
    np.testing.assert_array_equal(dist[1], np.eye(7)[5])
    np.testing.assert_array_equal(dist[2], np.eye(7)[6])
    np.testing.assert_array_equal(dist[3], np.eye(7)[3])
    np.testing.assert_allclose(dist.sum(1), 1.0, rtol=1e-6)


def test_a_name_shared_by_different_images_is_not_trusted(tmp_path):
    rows = ["Training,dup.png,10,0,0,0,0,0,0,0,0,0"] * 2 + ["Training,same.png,0,10,0,0,0,0,0,0,0,0"] * 2
    images = np.zeros((4, 48, 48), np.uint8)
    images[0] = 7  # rows 0/1 differ; rows 2/3 are pixel-identical
    dist, valid = ferplus_distribution(_data(4, [4, 4, 3, 3], ["Training"] * 4, images),
                                       load_ferplus(_votes_file(tmp_path, rows)))
    assert valid.tolist() == [False, False, True, True]
    np.testing.assert_array_equal(dist[0], np.eye(7)[4])


@pytest.mark.parametrize("rows, data, message", [
    (["Training,a.png,1,0,0,0,0,0,0,0,0,0"], _data(2, [0, 0], ["Training"] * 2), "has 1 rows but"),
    (["Training,a.png,1,0,0,0,0,0,0,0,0,0", "Training,b.png,1,0,0,0,0,0,0,0,0,0"],
     _data(2, [0, 0], ["Training", "PublicTest"]), "fer2013new.csv:3: Usage 'Training'"),
])
def test_misaligned_files_are_refused(tmp_path, rows, data, message):
    with pytest.raises(DataError, match=message):
        ferplus_distribution(data, load_ferplus(_votes_file(tmp_path, rows)))


@pytest.mark.parametrize("text, message", [
    ("Usage,pixels\nTraining,1 2 3\n", ":1: not a FER\\+ vote file"),
    (HEADER + "\nTraining,a.png,1,2\n", ":2: expected 12 fields, found 4"),
    (HEADER + "\nTraining,a.png,1,0,0,0,x,0,0,0,0,0\n", ":2: vote counts must be integers"),
    (HEADER + "\nTraining,a.png,1,0,0,0,-1,0,0,0,0,0\n", ":2: negative vote count"),
    (HEADER + "\n", "no rows"),
])
def test_malformed_vote_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "votes.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_ferplus(path)


def test_votes_that_look_shuffled_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    n = 1200
    labels = rng.integers(0, 7, n)
    columns = rng.integers(0, 7, n)  # one FER+ emotion per row, unrelated to the label
    rows = [f"Training,f{i}.png," + ",".join("10" if c == columns[i] else "0" for c in range(10)) for i in range(n)]
    data = _data(n, labels.tolist(), ["Training"] * n, np.zeros((n, 48, 48), np.uint8) + (np.arange(n) % 251).astype(np.uint8)[:, None, None])
    with pytest.raises(DataError, match="look misaligned"):
        attach_soft_targets(data, _votes_file(tmp_path, rows), 0.5)


def test_blend_keeps_distributions_and_checks_the_weight():
    dist = np.asarray([[0.5, 0.5, 0, 0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(blend_targets(np.asarray([1]), dist, 0.5), [[0.25, 0.75, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(blend_targets(np.asarray([1]), dist, 0.0), np.eye(7)[[1]])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        blend_targets(np.asarray([1]), dist, 1.5)


def test_vote_file_discovery(tmp_path, monkeypatch):
    monkeypatch.delenv("FERPLUS_PATH", raising=False)
    data_file = tmp_path / "fer2013.csv"
    data_file.write_text("")
    assert find_ferplus(data_file) is None
    with pytest.raises(DataError, match="pass --ferplus"):
        resolve_ferplus(None, data_file)
    (tmp_path / "fer2013new.csv").write_text("")
    assert find_ferplus(data_file) == tmp_path / "fer2013new.csv"
    monkeypatch.setenv("FERPLUS_PATH", "/elsewhere/votes.csv")
    assert find_ferplus(data_file) == Path("/elsewhere/votes.csv")
    assert resolve_ferplus("given.csv", data_file) == Path("given.csv")


@pytest.mark.data
def test_real_vote_file_aligns_with_the_shared_data(fer_data, monkeypatch):
    monkeypatch.delenv("FERPLUS_PATH", raising=False)
    path = find_ferplus(fer_data.source)
    assert path is not None, "the FER+ vote file should sit next to the FER2013 file"
    dist, valid = ferplus_distribution(fer_data, load_ferplus(path))
    np.testing.assert_allclose(dist[0], [0.3, 0.2, 0, 0, 0.1, 0, 0.4])  # README: row 0 votes
    assert not valid[5274] and not valid[6968]  # one FER+ name, two different images (data README)
    assert valid[8423] and valid[15835]  # one name, pixel-identical images
    assert 0.63 < (dist[valid].argmax(1) == fer_data.labels[valid]).mean() < 0.66  # README: 64.4% agree
    soft = attach_soft_targets(fer_data.subset(np.arange(len(fer_data))), path, 0.5).soft
    top = soft[np.arange(len(soft)), fer_data.labels]
    assert soft is not None and (top >= soft.max(1) - 1e-6).all()  # weight 0.5: FER2013's label is top (or tied)
    splits = make_splits(fer_data.subset(np.arange(len(fer_data))), 0.1, 0)
    assert splits.train.soft is None  # nothing attached: plain labels
