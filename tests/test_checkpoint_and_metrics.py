from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from fer_train.metrics import classification_report, confusion_matrix
from fer_train.models import arch_args, build_model


def _payload() -> dict:
    model = build_model("seed")
    return {
        "arch": "seed",
        "arch_args": arch_args("seed"),
        "state_dict": model.state_dict(),
        "labels": ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"],
        "preprocess": {"size": 48, "equalize": True, "mean": 0.0, "std": 1.0},
    }


def test_round_trip_and_no_temporary_left(tmp_path):
    payload = _payload()
    save_checkpoint(tmp_path / "sub" / "best.pt", payload)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["best.pt"]
    ckpt = load_checkpoint(tmp_path / "sub" / "best.pt")
    model = model_from_checkpoint(ckpt)
    x = torch.rand(3, 1, 48, 48)
    ref = build_model("seed")
    ref.load_state_dict(payload["state_dict"])
    assert torch.equal(model(x), ref.eval()(x))


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last.pt", _payload())
    before = (tmp_path / "last.pt").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last.pt", _payload())
    assert (tmp_path / "last.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "good.pt", _payload())
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a fer checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.pt")


def test_metrics_on_a_known_example():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    r = classification_report(y_true, y_pred, 3)
    assert r.accuracy == pytest.approx(5 / 7)
    assert r.precision == pytest.approx([0.5, 2 / 3, 1.0])
    assert r.recall == pytest.approx([0.5, 1.0, 2 / 3])
    f1 = [0.5, 0.8, 0.8]
    assert r.f1 == pytest.approx(f1)
    assert r.macro_f1 == pytest.approx(np.mean(f1))
    assert r.support == [2, 2, 3]
    # A class never predicted and never present scores zero, not NaN.
    r7 = classification_report(y_true, y_pred)
    assert r7.f1[6] == 0.0 and "macro-F1" in r7.table()
