"""fer_train.compat: every "may this checkpoint be used so?" answer, without data or training."""

from __future__ import annotations

import pytest

from fer_runtime import LABELS
from fer_train import compat
from fer_train.checkpoint import Checkpoint, CheckpointError, ResumeState
from fer_train.engine import TrainConfig
from fer_train.models import arch_args

SHA = "a" * 64


def _ckpt(**changes) -> Checkpoint:
    cfg = TrainConfig()
    base = dict(arch="seed", arch_args=arch_args("seed"), state_dict={}, labels=list(LABELS),
                preprocess=cfg.preprocess.to_dict(), train_config=cfg.to_dict(), epoch=3, data={"sha256": SHA},
                temperature=1.3, metrics={"val": {"accuracy": 0.6}})
    return Checkpoint(**{**base, **changes})


def _last(**changes) -> Checkpoint:
    return _ckpt(resume=ResumeState(optimizer={}, scheduler={}, scaler={}, history=[], best_val_acc=0.5, best_epoch=2),
                 **changes)


def test_errors_are_one_type_and_one_style():
    assert issubclass(compat.CompatibilityError, CheckpointError) and issubclass(compat.CompatibilityError, ValueError)
    with pytest.raises(compat.CompatibilityError, match=r"^--init-from i.pt: is vgg .*, not seed"):
        compat.check_init(_ckpt(arch="vgg"), "i.pt", TrainConfig(), arch_args("seed"), SHA)
    with pytest.raises(compat.CompatibilityError, match=r"^teacher t.pt: predicts"):
        compat.check_teacher(_ckpt(labels=["a"]), "t.pt", TrainConfig())


def test_init_from_needs_the_same_split_and_held_out_validation():
    cfg, args = TrainConfig(), arch_args("seed")
    compat.check_init(_ckpt(), "i.pt", cfg, args, SHA)
    with pytest.raises(compat.CompatibilityError, match="another validation split"):
        compat.check_init(_ckpt(), "i.pt", TrainConfig(split_seed=1), args, SHA)
    with pytest.raises(compat.CompatibilityError, match="other data"):
        compat.check_init(_ckpt(), "i.pt", cfg, args, "b" * 64)
    val_trained = _ckpt(train_config={**cfg.to_dict(), "train_on_val": True})
    with pytest.raises(compat.CompatibilityError, match="trained on the validation faces.*only another --train-on-val"):
        compat.check_init(val_trained, "i.pt", cfg, args, SHA)
    compat.check_init(val_trained, "i.pt", TrainConfig(train_on_val=True), args, SHA)


def test_teacher_needs_the_student_preprocessing():
    with pytest.raises(compat.CompatibilityError, match="expects preprocessing"):
        compat.check_teacher(_ckpt(preprocess={"size": 40}), "t.pt", TrainConfig())


def test_temperature_source_must_be_the_held_out_twin():
    cfg, args = TrainConfig(train_on_val=True), arch_args("seed")
    compat.check_temperature_source(_ckpt(), "r.pt", cfg, args, SHA)
    with pytest.raises(compat.CompatibilityError, match="not a temperature fitted on held-out"):
        compat.check_temperature_source(_ckpt(temperature=None), "r.pt", cfg, args, SHA)
    with pytest.raises(compat.CompatibilityError, match="must be the run this one refits"):
        compat.check_temperature_source(_ckpt(), "r.pt", TrainConfig(train_on_val=True, split_seed=2), args, SHA)


def test_resume_reports_allowed_changes_and_refuses_frozen_ones():
    args, desc = arch_args("seed"), {"sha256": SHA}
    assert compat.check_resume(_last(), "last.pt", TrainConfig(), args, desc, None) == {}
    assert compat.check_resume(_last(), "last.pt", TrainConfig(epochs=60), args, desc, None) == {"epochs": (60, 50)}
    old = _last(train_config={k: v for k, v in TrainConfig().to_dict().items() if k != "distill"})
    assert compat.check_resume(old, "last.pt", TrainConfig(), args, desc, None) == {}  # missing keys: defaults
    for cfg, message in ((TrainConfig(lr=0.1), "cannot change lr when resuming"),
                         (TrainConfig(epochs=2), "already trained 3 epochs"),
                         (TrainConfig(arch="vgg"), "was trained as seed")):
        with pytest.raises(compat.CompatibilityError, match=message):
            compat.check_resume(_last(), "last.pt", cfg, arch_args(cfg.arch), desc, None)
    with pytest.raises(compat.CompatibilityError, match="other data"):
        compat.check_resume(_last(), "last.pt", TrainConfig(), args, {"sha256": "b" * 64}, None)
    with pytest.raises(compat.CompatibilityError, match="holds no training state"):
        compat.check_resume(_ckpt(), "best.pt", TrainConfig(), args, desc, None)
    teacher = [{"path": "t.pt", "sha256": "1" * 64}]
    for recorded in (teacher, teacher[0]):  # older checkpoints: one dict
        with pytest.raises(compat.CompatibilityError, match="^teacher t.pt: has changed since last.pt"):
            compat.check_resume(_last(teacher=recorded), "last.pt", TrainConfig(), args, desc,
                                [{"path": "t.pt", "sha256": "2" * 64}])


def test_fer_eval_validation_split():
    cfg = TrainConfig().to_dict()
    assert compat.validation_split_of([_ckpt(), _ckpt()], ["a.pt", "b.pt"]) == (0.1, 0)
    with pytest.raises(compat.CompatibilityError, match="^fer-eval b.pt: trained on the validation faces"):
        compat.validation_split_of([_ckpt(), _ckpt(train_config={**cfg, "train_on_val": True})], ["a.pt", "b.pt"])
    with pytest.raises(compat.CompatibilityError, match="different splits"):
        compat.validation_split_of([_ckpt(), _ckpt(train_config={**cfg, "split_seed": 4})], ["a.pt", "b.pt"])
    assert compat.trained_on([_ckpt()], SHA) and not compat.trained_on([_ckpt()], "c")
