"""Training on real FER2013 subsets: loss goes down, resume is exact (kill -9 included), DDP runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fer_runtime import preprocess
from fer_train import engine
from fer_train.checkpoint import load_checkpoint, save_checkpoint
from fer_train.engine import TrainConfig, train
from fer_train.models import build_model

pytestmark = [pytest.mark.slow, pytest.mark.data]

TINY = {"limit": 1200, "epochs": 3, "batch_size": 64, "progress": False}
TIMING_KEYS = {"epoch_seconds", "images_per_second"}


def _cli_args(fer_path: Path, out: Path) -> list[str]:
    return ["--data", str(fer_path), "-o", str(out), "--limit", str(TINY["limit"]), "--epochs", str(TINY["epochs"]),
            "--batch-size", str(TINY["batch_size"]), "--no-progress"]


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] == TINY["epochs"]
    for key, tensor in ca["state_dict"].items():
        assert torch.equal(tensor, cb["state_dict"][key]), key
    strip = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in ca["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in cb["history"]]


@pytest.fixture(scope="module")
def uninterrupted(fer_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    train(TrainConfig(data=str(fer_path), out_dir=str(out), **TINY))
    return out


def test_short_training_lowers_the_loss_and_writes_everything(uninterrupted):
    history = json.loads((uninterrupted / "metrics.json").read_text())
    assert len(history) == TINY["epochs"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "confusion_val.png", "confusion_test.png",
                 "final_metrics.json"):
        assert (uninterrupted / name).stat().st_size > 0, name
    best = load_checkpoint(uninterrupted / "best.pt")
    assert "optimizer" not in best  # the shipped checkpoint stays small
    assert best["metrics"]["test"]["accuracy"] > 0 and best["metrics"]["test_flip_tta"] is not None
    assert best["data"]["n_train"] == TINY["limit"] and best["data"]["n_val"] == 2872
    assert best["epoch"] == best["metrics"]["best_epoch"]


def _train_interrupted_then_resumed(cfg: TrainConfig, monkeypatch) -> None:
    """Train ``cfg``, stop it (KeyboardInterrupt) once its second epoch is saved, then resume it."""
    calls = {"n": 0}
    real = engine._write_history

    def interrupt_after_two_epochs(out, history):
        real(out, history)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_write_history", interrupt_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert load_checkpoint(Path(cfg.out_dir) / "last.pt")["epoch"] == 2
    monkeypatch.setattr(engine, "_write_history", real)
    train(cfg, resume=True)


def test_resume_after_an_interruption_equals_the_uninterrupted_run(fer_path, tmp_path, monkeypatch, uninterrupted):
    _train_interrupted_then_resumed(TrainConfig(data=str(fer_path), out_dir=str(tmp_path), **TINY), monkeypatch)
    _assert_same_run(uninterrupted, tmp_path)


def test_kill_minus_nine_mid_epoch_then_resume(fer_path, tmp_path, uninterrupted):
    cmd = [sys.executable, "-m", "fer_train", *_cli_args(fer_path, tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "metrics.json").exists():  # first epoch done, the second one running
            assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "final_metrics.json").exists()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] < TINY["epochs"]
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    _assert_same_run(uninterrupted, tmp_path)


def test_resume_refuses_another_architecture_setup(fer_path, tmp_path, uninterrupted):
    import shutil

    shutil.copy(uninterrupted / "last.pt", tmp_path / "last.pt")
    cfg = TrainConfig(data=str(fer_path), out_dir=str(tmp_path), preprocess=engine.PreprocessConfig(size=40), **TINY)
    with pytest.raises(ValueError, match="was trained as seed"):
        train(cfg, resume=True)


def test_resume_with_more_epochs_extends_a_finished_run(fer_path, tmp_path, uninterrupted, caplog):
    import shutil

    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    before = load_checkpoint(tmp_path / "last.pt")
    for key in ("soft_labels", "ferplus", "teacher", "distill", "distill_temperature"):
        del before["train_config"][key]  # as written before these options existed: read as their defaults
    save_checkpoint(tmp_path / "last.pt", before)
    assert before["history"][-1]["lr"] == 0.0  # the finished cosine ended at zero
    caplog.set_level("INFO")
    cfg = TrainConfig(data=str(fer_path), out_dir=str(tmp_path), **{**TINY, "epochs": TINY["epochs"] + 1})
    train(cfg, resume=True)
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["epoch"] == TINY["epochs"] + 1 and after["train_config"]["epochs"] == TINY["epochs"] + 1
    assert after["history"][: TINY["epochs"]] == before["history"]
    assert "schedule stretched from 3 to 4 epochs" in caplog.text
    assert "resuming with a changed recipe: epochs 3 -> 4\n" in caplog.text  # nothing else changed
    # The extra epoch trained at the stretched schedule's lr, not at the old schedule's final 0.
    params = [k for k in before["state_dict"] if k.endswith(("weight", "bias"))]
    assert any(not torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in params)


def test_fer_plus_soft_labels_change_the_loss_and_are_recorded(fer_path, tmp_path, uninterrupted, monkeypatch):
    monkeypatch.delenv("FERPLUS_PATH", raising=False)
    result = train(TrainConfig(data=str(fer_path), out_dir=str(tmp_path), soft_labels=0.5, **{**TINY, "epochs": 1}))
    hard = json.loads((uninterrupted / "metrics.json").read_text())[0]
    assert result.history[0]["train_loss"] != pytest.approx(hard["train_loss"], rel=1e-6)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["train_config"]["soft_labels"] == 0.5
    assert best["data"]["soft_targets"].startswith("fernew") and len(best["data"]["soft_targets_sha256"]) == 64


def test_distillation_from_a_teacher_checkpoint(fer_path, tmp_path, uninterrupted):
    from conftest import SEED_CHECKPOINT

    from fer_train.data import file_sha256

    result = train(TrainConfig(data=str(fer_path), out_dir=str(tmp_path), teacher=str(SEED_CHECKPOINT),
                               **{**TINY, "epochs": 1}))
    hard = json.loads((uninterrupted / "metrics.json").read_text())[0]
    assert result.history[0]["train_loss"] != pytest.approx(hard["train_loss"], rel=1e-6)
    best = load_checkpoint(tmp_path / "best.pt")
    assert [(t["sha256"], t["arch"]) for t in best["teacher"]] == [(file_sha256(SEED_CHECKPOINT), "seed")]
    assert best["train_config"]["teacher"] == [str(SEED_CHECKPOINT)]
    # Two copies of one teacher teach exactly what it teaches alone: the ensemble is the mean of
    # the logits (a sum would double them and change the loss).
    twice = train(TrainConfig(data=str(fer_path), out_dir=str(tmp_path / "twice"),
                              teacher=[str(SEED_CHECKPOINT)] * 2, **{**TINY, "epochs": 1}))
    assert twice.history[0]["train_loss"] == pytest.approx(result.history[0]["train_loss"], rel=1e-6)
    assert len(load_checkpoint(tmp_path / "twice" / "best.pt")["teacher"]) == 2
    with pytest.raises(ValueError, match="expects preprocessing"):
        train(TrainConfig(data=str(fer_path), out_dir=str(tmp_path / "b"), teacher=str(SEED_CHECKPOINT),
                          preprocess=engine.PreprocessConfig(size=40), **TINY))


def test_swa_fine_tuning_from_a_checkpoint_averages_each_epoch_and_resumes_exactly(fer_path, tmp_path, monkeypatch,
                                                                                    uninterrupted):
    from fer_train.data import file_sha256

    init = uninterrupted / "best.pt"
    seen: list[dict[str, torch.Tensor]] = []
    real = engine.swa_update

    def record(average, model, n):
        seen.append({k: v.detach().clone() for k, v in model.named_parameters()})
        real(average, model, n)

    monkeypatch.setattr(engine, "swa_update", record)
    cfg = TrainConfig(data=str(fer_path), out_dir=str(tmp_path / "a"), init_from=str(init), swa_start=1, **TINY)
    train(cfg)
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    n = TINY["epochs"]
    assert len(seen) == last["swa_n"] == n  # every epoch joined the average
    for name in seen[0]:
        torch.testing.assert_close(last["swa_state_dict"][name], torch.stack([s[name] for s in seen]).mean(0))
    history = last["history"]
    assert [row["swa_models"] for row in history] == list(range(1, n + 1))
    assert [row["lr"] for row in history] == pytest.approx([cfg.lr / 5] * n)
    # best.pt holds the average of the first k epochs, k the best epoch on validation.
    best = load_checkpoint(tmp_path / "a" / "best.pt")
    k = best["metrics"]["swa_models"]
    assert k == best["epoch"] and history[k - 1]["val_acc"] == max(row["val_acc"] for row in history)
    for name in seen[0]:
        torch.testing.assert_close(best["state_dict"][name], torch.stack([s[name] for s in seen[:k]]).mean(0))
    assert best["init_from"]["sha256"] == file_sha256(init)
    # The average's BatchNorm statistics were recomputed on the training faces (not carried over from
    # the running weights), in last.pt and in best.pt, and each epoch's validation figure is the average's.
    splits, rt = engine.load_splits(cfg), engine.setup_runtime(cfg)
    x_train = torch.from_numpy(preprocess(splits.train.images, cfg.preprocess))

    def with_recomputed_statistics(state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = build_model(cfg.arch, **last["arch_args"])
        model.load_state_dict(state)
        if rt.channels_last:  # as in training: bf16 kernels differ in the last bits between memory formats
            model = model.to(memory_format=torch.channels_last)
        engine.recompute_batchnorm(model, x_train, rt)
        stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
        assert stats
        for key in stats:
            torch.testing.assert_close(model.state_dict()[key], state[key], rtol=1e-2, atol=1e-4)
        return model

    average = with_recomputed_statistics(last["swa_state_dict"])
    with_recomputed_statistics(best["state_dict"])
    assert any(not torch.allclose(v, last["state_dict"][k]) for k, v in last["swa_state_dict"].items()
               if k.endswith("running_var"))
    x_val, y_val = torch.from_numpy(preprocess(splits.val.images, cfg.preprocess)), torch.from_numpy(splits.val.labels)
    assert engine._evaluate(average, x_val, y_val, rt)[1] == pytest.approx(history[-1]["val_acc"], abs=2 / len(y_val))
    # --init-from loads the checkpoint's weights, and refuses one trained on another validation split.
    fresh = build_model(cfg.arch, **last["arch_args"])
    engine.init_weights(cfg, fresh, last["arch_args"], best["data"])
    for key, value in load_checkpoint(init)["state_dict"].items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(ValueError, match="another validation split"):
        engine.init_weights(TrainConfig(init_from=str(init), split_seed=1), fresh, last["arch_args"], best["data"])

    monkeypatch.setattr(engine, "swa_update", real)
    resumed = TrainConfig(**{**cfg.to_dict(), "augment": cfg.augment, "preprocess": cfg.preprocess,
                             "out_dir": str(tmp_path / "b")})
    _train_interrupted_then_resumed(resumed, monkeypatch)
    again = load_checkpoint(tmp_path / "b" / "last.pt")
    assert again["swa_n"] == n and again["init_from"] == last["init_from"]
    strip = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in again["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]
    for key, tensor in last["swa_state_dict"].items():
        assert torch.equal(tensor, again["swa_state_dict"][key]), key
    with pytest.raises(ValueError, match="cannot change swa_start"):
        train(TrainConfig(**{**resumed.to_dict(), "augment": cfg.augment, "preprocess": cfg.preprocess,
                             "swa_start": 2}), resume=True)
    with pytest.raises(ValueError, match="--init-from .* is seed"):
        train(TrainConfig(data=str(fer_path), out_dir=str(tmp_path / "c"), init_from=str(init), arch="vgg-small",
                          **TINY))


def test_train_on_val_adds_the_validation_faces_to_training(fer_path):
    plain = engine.load_splits(TrainConfig(data=str(fer_path)))
    fit = engine.load_splits(TrainConfig(data=str(fer_path), train_on_val=True))
    assert len(fit.train) == len(plain.train) + len(plain.val) and fit.val_in_train and not plain.val_in_train
    assert (fit.train.images[len(plain.train):] == plain.val.images).all()
    assert (fit.train.labels[len(plain.train):] == plain.val.labels).all()
    assert (fit.val.labels == plain.val.labels).all()  # still scored on (labelled as trained on)
    assert fit.describe()["val_in_train"] is True and "val_in_train" not in plain.describe()


def test_train_on_val_selects_nothing_and_keeps_its_checkpoints_out_of_held_out_runs(fer_path, tmp_path, uninterrupted,
                                                                                     monkeypatch):
    from typer.testing import CliRunner

    from fer_export.onnx_export import _summarise_metrics
    from fer_train.cli import eval_app

    init = uninterrupted / "best.pt"
    cfg = TrainConfig(data=str(fer_path), out_dir=str(tmp_path / "fit"), init_from=str(init), train_on_val=True,
                      **{**TINY, "epochs": 2})
    scores = iter([0.9, 0.1])  # validation would pick epoch 1; the final fit must keep epoch 2 anyway
    real_evaluate = engine._evaluate
    monkeypatch.setattr(engine, "_evaluate", lambda *a: (real_evaluate(*a)[0], next(scores)))
    train(cfg)
    monkeypatch.setattr(engine, "_evaluate", real_evaluate)
    best, last = load_checkpoint(tmp_path / "fit" / "best.pt"), load_checkpoint(tmp_path / "fit" / "last.pt")
    assert best["epoch"] == 2 and best["data"]["val_in_train"]  # the last epoch, whatever validation said
    for key, tensor in last["state_dict"].items():
        assert torch.equal(tensor, best["state_dict"][key]), key
    metrics = best["metrics"]
    assert "val" not in metrics and metrics["val_trained_on"]["accuracy"] > 0 and metrics["test"]["accuracy"] > 0
    # The temperature is the one fitted on validation before those faces were trained on.
    assert best["temperature"] == load_checkpoint(init)["temperature"] != 1.0
    assert metrics["calibration"]["temperature_from"] == str(init)
    assert metrics["calibration"]["temperature_from_sha256"] == best["init_from"]["sha256"]
    summary = _summarise_metrics(metrics)
    assert summary["trained_on_val"] and "val_accuracy" not in summary and "best_val_acc" not in summary
    result = CliRunner().invoke(eval_app, [str(tmp_path / "fit" / "best.pt"), "--split", "val", "--data", str(fer_path)])
    assert result.exit_code == 1 and "trained on the validation faces" in result.output
    # Its weights would leak the validation faces into a held-out run, as teacher or as starting point.
    held_out = {"data": str(fer_path), "out_dir": str(tmp_path / "other"), **TINY}
    for option in ({"teacher": str(tmp_path / "fit" / "best.pt")}, {"init_from": str(tmp_path / "fit" / "best.pt")}):
        with pytest.raises(ValueError, match="trained on the validation faces"):
            train(TrainConfig(**held_out, **option))
    # --temperature-of: only for the final fit, and only from a run that held validation out.
    with pytest.raises(ValueError, match="for train_on_val runs"):
        TrainConfig(temperature_of=str(init))
    twin = TrainConfig(train_on_val=True, temperature_of=str(init))
    source = engine.inherited_temperature(twin, best["init_from"], best["arch_args"], best["data"])
    assert source["temperature"] == load_checkpoint(init)["temperature"] and source["temperature_from"] == str(init)
    assert source["recipe_val_accuracy"] == load_checkpoint(init)["metrics"]["val"]["accuracy"]
    with pytest.raises(ValueError, match="must be the run this one refits"):
        engine.inherited_temperature(TrainConfig(train_on_val=True, temperature_of=str(init), split_seed=1),
                                     None, best["arch_args"], best["data"])
    with pytest.raises(ValueError, match="not a temperature fitted on held-out"):
        train(TrainConfig(**{**held_out, "out_dir": str(tmp_path / "t")}, train_on_val=True,
                          temperature_of=str(tmp_path / "fit" / "best.pt")))
    with pytest.raises(ValueError, match="cannot change train_on_val"):
        train(TrainConfig(**{**cfg.to_dict(), "augment": cfg.augment, "preprocess": cfg.preprocess,
                             "train_on_val": False}), resume=True)


def test_ensemble_teacher_averages_the_logits_of_its_members():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 7), torch.nn.Linear(4, 7)
    x = torch.randn(5, 4)
    torch.testing.assert_close(engine.LogitMean([a, b])(x), (a(x) + b(x)) / 2)
    torch.testing.assert_close(engine.LogitMean([a])(x), a(x))


def test_teacher_option_takes_one_path_or_several():
    assert TrainConfig(teacher="a.pt").teacher == ["a.pt"]  # as checkpoints before ensembles store it
    assert TrainConfig(teacher=("a.pt", "b.pt")).teacher == ["a.pt", "b.pt"]
    assert TrainConfig(teacher=[]).teacher is None and TrainConfig().teacher is None


def test_distillation_loss_is_t_squared_kl_teacher_to_student():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 7, generator=gen), 2 * torch.randn(6, 7, generator=gen)
    t = 3.0
    p_t, log_p_s = torch.softmax(teacher / t, 1), torch.log_softmax(student / t, 1)
    expected = t**2 * (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()
    assert float(engine.distillation_loss(student, teacher, t)) == pytest.approx(float(expected), rel=1e-5)
    assert float(engine.distillation_loss(teacher, student, t)) != pytest.approx(float(expected), rel=1e-3)
    assert float(engine.distillation_loss(student, student, t)) == pytest.approx(0.0, abs=1e-6)


def test_soft_targets_stay_aligned_with_labels_through_the_splits(fer_path, monkeypatch):
    import numpy as np

    monkeypatch.delenv("FERPLUS_PATH", raising=False)
    splits = engine.load_splits(TrainConfig(data=str(fer_path), soft_labels=0.5, limit=1200))
    for part in (splits.train, splits.val):
        n = len(part.labels)
        # 0.5 one-hot + 0.5 distribution: the FER2013 label always keeps at least 0.5 of the mass.
        assert (part.soft[np.arange(n), part.labels] >= 0.5 - 1e-6).all()


def test_resume_refuses_a_teacher_replaced_in_place(fer_path, tmp_path, uninterrupted):
    import shutil

    from conftest import SEED_CHECKPOINT

    teacher, kept = tmp_path / "teacher.pt", tmp_path / "kept" / "teacher.pt"
    kept.parent.mkdir()
    shutil.copy(SEED_CHECKPOINT, teacher)
    shutil.copy(SEED_CHECKPOINT, kept)
    cfg = {**TINY, "epochs": 1, "data": str(fer_path), "out_dir": str(tmp_path / "run")}
    train(TrainConfig(teacher=str(teacher), **cfg))
    shutil.copy(uninterrupted / "best.pt", teacher)  # the file at the teacher's path is another model now
    with pytest.raises(ValueError, match="has changed since"):
        train(TrainConfig(teacher=str(teacher), **cfg), resume=True)
    last = load_checkpoint(tmp_path / "run" / "last.pt")  # older checkpoints describe one teacher as a dict
    save_checkpoint(tmp_path / "run" / "last.pt", {**last, "teacher": last["teacher"][0]})
    with pytest.raises(ValueError, match="has changed since"):
        train(TrainConfig(teacher=str(teacher), **cfg), resume=True)
    # The same weights under another path resume (the finished run has no epochs left to train).
    assert len(train(TrainConfig(teacher=str(kept), **cfg), resume=True).history) == 1


def test_resume_refuses_changes_it_could_not_honour(fer_path, tmp_path, uninterrupted):
    import shutil

    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    for change, message in (({"lr": 0.1}, "cannot change lr"), ({"optimizer": "sgd"}, "cannot change optimizer"),
                            ({"val_fraction": 0.2}, "cannot change val_fraction"),
                            ({"epochs": 2}, "already trained 3 epochs")):
        with pytest.raises(ValueError, match=message):
            train(TrainConfig(data=str(fer_path), out_dir=str(tmp_path), **{**TINY, **change}), resume=True)


def test_ddp_two_cpu_processes(fer_path, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "fer_train",
           "--data", str(fer_path), "-o", str(tmp_path), "--limit", "800", "--epochs", "2", "--batch-size", "64",
           "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world 2" in done.stderr
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 2 and len(last["history"]) == 2
    # Each rank saw half of every global batch; the epoch still covered the whole subset.
    assert last["data"]["n_train"] == 800
    assert (tmp_path / "final_metrics.json").exists()
