from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fer_train.checkpoint import (
    Checkpoint,
    CheckpointError,
    ResumeState,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from fer_train.metrics import classification_report, confusion_matrix
from fer_train.models import arch_args, build_model

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "models").glob("*/best.pt"))


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


def test_typed_checkpoint_round_trips_through_the_flat_file(tmp_path):
    ckpt = Checkpoint(**_payload(), train_config={"train_on_val": True, "split_seed": 3}, epoch=2,
                      metrics={"val": {"accuracy": 0.5}}, data={"sha256": "ab"}, teacher={"path": "t.pt"},
                      temperature=1.5, extra={"note": "kept"},
                      resume=ResumeState(optimizer={"state": {}}, scheduler={}, scaler={}, history=[{"epoch": 1}],
                                         best_val_acc=0.5, best_epoch=1))
    ckpt.save(tmp_path / "last.pt")
    flat = load_checkpoint(tmp_path / "last.pt")  # what fer-export and fer-bench read
    assert flat["format_version"] == 1 and flat["temperature"] == 1.5 and flat["best_epoch"] == 1
    assert flat["note"] == "kept" and flat["swa_n"] == 0
    again = Checkpoint.load(tmp_path / "last.pt")
    assert again.to_payload().keys() == ckpt.to_payload().keys()
    assert again.resume == ckpt.resume and again.extra == {"note": "kept"}
    assert again.trained_on_val and again.split == (0.1, 3) and again.data_sha256 == "ab"
    assert again.teachers == [{"path": "t.pt"}] and again.val_accuracy == 0.5 and again.test_accuracy is None
    best = Checkpoint(**_payload())  # no resume state, no temperature: neither key is written
    assert not {"optimizer", "temperature", "history"} & best.to_payload().keys()


def test_a_newer_format_version_is_refused_clearly(tmp_path):
    payload = {**_payload(), "format": "fer-checkpoint", "format_version": 2}
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 2 is newer than this package supports .*upgrade"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 2 is newer"):
        Checkpoint.from_payload(payload)
    with pytest.raises(CheckpointError, match="lacks state_dict"):
        Checkpoint.from_payload({k: v for k, v in payload.items() if k != "state_dict"} | {"format_version": 1})


@pytest.mark.parametrize("path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_every_shipped_checkpoint_loads_through_the_typed_form(path):
    flat = load_checkpoint(path)
    ckpt = Checkpoint.from_payload(flat, path)
    assert ckpt.arch == flat["arch"] and ckpt.labels == flat["labels"] and ckpt.resume is None
    assert ckpt.extra == {}  # every key of a shipped checkpoint has a typed home
    assert ckpt.test_accuracy is not None and ckpt.data_sha256
    payload = ckpt.to_payload()  # written back, it keeps every key it had (older ones gain teacher/init_from: None)
    assert set(flat) - {"format", "format_version"} <= set(payload)
    assert all(payload[k] is flat[k] for k in flat if k not in ("format", "format_version"))


def test_a_shipped_checkpoint_rebuilds_its_model():
    ckpt = Checkpoint.load(REPO / "models" / "seed" / "best.pt")
    x = torch.rand(2, 1, ckpt.preprocess["size"], ckpt.preprocess["size"])
    with torch.no_grad():
        assert torch.equal(ckpt.model()(x), model_from_checkpoint(load_checkpoint(REPO / "models" / "seed" / "best.pt"))(x))
        assert ckpt.model()(x).shape == (2, len(ckpt.labels))


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
