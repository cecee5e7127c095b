"""tools/compare_models.py: the paired statistics behind "is A better than B"."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("compare_models", REPO / "tools" / "compare_models.py")
cm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cm)


def test_mcnemar_exact_matches_the_binomial_test():
    assert cm.mcnemar_exact(0, 0) == 1.0
    assert cm.mcnemar_exact(5, 5) == 1.0
    assert cm.mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert cm.mcnemar_exact(10, 0) == cm.mcnemar_exact(0, 10)
    # P(X <= 2 | n=12, 1/2) = (1 + 12 + 66) / 4096, doubled
    assert cm.mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)
    with pytest.raises(ValueError):
        cm.mcnemar_exact(-1, 3)


def test_paired_counts_only_the_discordant_faces():
    a = np.array([1, 1, 0, 0, 1, 1], bool)
    b = np.array([1, 0, 1, 0, 0, 1], bool)
    r = cm.paired(a, b)
    assert (r.n, r.only_a, r.only_b) == (6, 2, 1)
    assert r.acc_a == pytest.approx(4 / 6) and r.acc_b == pytest.approx(3 / 6)
    assert r.diff == pytest.approx(r.acc_a - r.acc_b)
    lo, hi = r.ci95()
    assert lo < r.diff < hi
    # pinned: the paired (Wald) interval, not that of two independent accuracies
    big = cm.Paired(2872, 0.7068, 0.6943, 201, 165)
    assert big.ci95() == pytest.approx((-0.000513, 0.025583), abs=1e-6)
    assert big.mcnemar_p() == pytest.approx(0.0672, abs=1e-4)
    assert cm.paired(a, a).ci95() == (0.0, 0.0)  # identical models: no uncertainty about the difference
    with pytest.raises(ValueError):
        cm.paired(a, b[:3])


def test_unknown_model_fails_before_loading_data(capsys):
    assert cm.main(["nope", "vgg", "--data", "/nonexistent"]) == 1
    assert "no such model" in capsys.readouterr().err


@pytest.mark.data
def test_a_model_against_itself_on_real_data(fer_path, capsys):
    assert cm.main(["vgg-small", "vgg-small", "--data", str(fer_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["val", "PublicTest"]
    assert "n=2872" in lines[0] and "n=3589" in lines[1]
    for ln in lines:
        assert "difference +0.00%" in ln and "only by vgg-small: 0, only by vgg-small: 0" in ln and "p = 1.000" in ln


@pytest.mark.data
def test_a_model_that_trained_on_the_validation_faces_is_compared_on_publictest_only(fer_path, tmp_path, capsys):
    import json

    import onnx

    model = onnx.load(str(REPO / "models" / "vgg-small" / "model.onnx"))
    (entry,) = [p for p in model.metadata_props if p.key == "fer_edge"]
    meta = json.loads(entry.value)
    meta["metrics"] = {"trained_on_val": True, "test_accuracy": meta["metrics"]["test_accuracy"]}
    entry.value = json.dumps(meta)
    fitted = tmp_path / "fitted.onnx"
    onnx.save(model, str(fitted))
    assert cm.main([str(fitted), "vgg-small", "--data", str(fer_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("val") and f"skipped: {fitted} trained on the validation faces" in lines[0]
    assert lines[1].startswith("PublicTest") and "difference +0.00%" in lines[1]


def test_pixel_twins_are_found_by_exact_content():
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    near = pool[1].copy()
    near[0, 0] ^= 1  # one pixel off: not a twin
    images = np.stack([pool[3], near, pool[0], rng.integers(0, 256, (48, 48), dtype=np.uint8)])
    assert cm.has_duplicate_in(images, pool).tolist() == [True, False, True, False]
    assert cm.has_duplicate_in(images, pool[:0]).tolist() == [False] * 4


@pytest.mark.data
def test_dedup_splits_publictest_by_training_twins(fer_path, capsys):
    assert cm.main(["vgg-small", "vgg-small", "--data", str(fer_path), "--dedup"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(" n=")[0].strip() for ln in lines] == [
        "val", "PublicTest", "PublicTest without Training twins", "twins in the training part", "twins only in validation"]
    sizes = [int(ln.split(" n=")[1].split(":")[0]) for ln in lines]
    assert sizes[1:] == [3589, 3309, 265, 15]  # the known leak: 280 twins, 15 of them only in validation
