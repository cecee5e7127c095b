"""The training recipe's pieces: new architectures, schedule, class weights, erasing, mixup, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fer_train.augment import AugmentConfig, augment, random_erase
from fer_train.calibration import expected_calibration_error, fit_temperature, softmax
from fer_train import engine
from fer_train.engine import TrainConfig, class_weights, lr_factor
from fer_train.models import build_model, count_parameters


@pytest.mark.parametrize(("name", "params"), [("vgg", 1_165_159), ("vgg-deep", 1_755_495), ("vgg-medium", 456_067), ("vgg-small", 292_279), ("vgg-taper", 955_851)])
def test_vgg_architectures_build(name, params):
    model = build_model(name)
    assert count_parameters(model) == params
    assert model.eval()(torch.zeros(3, 1, 48, 48)).shape == (3, 7)
    with pytest.raises(ValueError, match="equal length"):
        build_model(name, widths=(8, 16), blocks=(1,))


def test_warmup_then_cosine():
    cfg = TrainConfig(epochs=10, warmup_epochs=2)
    factors = [lr_factor(cfg, e) for e in range(10)]
    assert factors[0] == pytest.approx(1 / 3) and factors[1] == pytest.approx(2 / 3)
    assert factors[2] == pytest.approx(1.0) and factors[-1] < 0.05
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
    plain = TrainConfig(epochs=4)
    assert [lr_factor(plain, e) for e in range(4)] == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(epochs=3, warmup_epochs=3)


def test_swa_schedule_decays_to_the_swa_lr_then_holds_it():
    cfg = TrainConfig(epochs=10, lr=0.05, warmup_epochs=1, swa_start=7, swa_lr=0.01)
    factors = [lr_factor(cfg, e) for e in range(10)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[1:6], factors[2:7]))  # cosine over epochs 2-6
    assert factors[5] > 0.2 and factors[6:] == pytest.approx([0.2] * 4)  # 0.01 / 0.05 from epoch 7 on
    fine_tune = TrainConfig(epochs=3, lr=0.05, swa_start=1)  # SWA from a trained model: constant lr / 5
    assert fine_tune.swa_lr == pytest.approx(0.01) and [lr_factor(fine_tune, e) for e in range(3)] == pytest.approx([0.2] * 3)
    assert [engine.in_swa_phase(cfg, e) for e in range(10)] == [False] * 6 + [True] * 4
    for bad, message in (({"swa_start": 11}, "swa_start"), ({"swa_start": 2, "warmup_epochs": 2}, "warmup"),
                         ({"swa_start": 2, "swa_lr": 0.0}, "swa_lr"), ({"swa_start": 2, "lr": 0.01, "swa_lr": 0.02}, "swa_lr"),
                         ({"swa_lr": 0.01}, "needs swa_start")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(epochs=10, **bad)


def test_swa_update_is_the_running_mean_of_the_weights():
    torch.manual_seed(0)
    snapshots = [torch.nn.Linear(3, 2) for _ in range(4)]
    average = torch.nn.Linear(3, 2)
    for n, snap in enumerate(snapshots):
        engine.swa_update(average, snap, n)
    torch.testing.assert_close(average.weight, torch.stack([s.weight for s in snapshots]).mean(0))
    torch.testing.assert_close(average.bias, torch.stack([s.bias for s in snapshots]).mean(0))


def test_recomputed_batchnorm_statistics_are_those_of_the_whole_data():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    x = 3 + 2 * torch.randn(1100, 1, 8, 8)
    rt = engine.Runtime(torch.device("cpu"), 0, 1, None, channels_last=False)
    engine.recompute_batchnorm(net, x, rt, batch_size=500)  # three unequal batches
    with torch.no_grad():
        feats = net[0](x)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    # The variance is the size-weighted mean of the batches' variances: the spread of their means is left out.
    torch.testing.assert_close(bn.running_var, feats.var((0, 2, 3)), rtol=2e-3, atol=0)
    assert bn.momentum == 0.1 and not net.training  # restored


def test_class_weights_favour_rare_classes_and_average_one():
    labels = torch.tensor([0] * 80 + [1] * 5 + [2] * 15 + [3, 4, 5, 6] * 5)
    assert class_weights(TrainConfig(), labels) is None
    for kind in ("balanced", "sqrt"):
        w = class_weights(TrainConfig(class_weights=kind), labels)
        assert w[1] > w[2] > w[0]
        assert (w[labels]).mean().item() == pytest.approx(1.0, abs=1e-5)
    b, s = (class_weights(TrainConfig(class_weights=k), labels) for k in ("balanced", "sqrt"))
    assert (b[1] / b[0]).item() == pytest.approx(16.0, rel=1e-4) and (s[1] / s[0]).item() == pytest.approx(4.0, rel=1e-4)


def test_random_erase():
    x = torch.rand(64, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    assert torch.equal(random_erase(x, 0.0, torch.Generator().manual_seed(1)), x)
    y = random_erase(x, 1.0, torch.Generator().manual_seed(1))
    changed = (y != x).flatten(1).float().mean(1)
    assert (changed > 0.01).all() and (changed < 0.25).all()  # 2-20% of each face
    fill = x.mean(dim=(1, 2, 3))
    for i in range(4):
        assert torch.allclose(y[i][y[i] != x[i]], fill[i].expand_as(y[i][y[i] != x[i]]))
    a = augment(x, AugmentConfig(erase=0.5), torch.Generator().manual_seed(3))
    b = augment(x, AugmentConfig(erase=0.5), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 7))
    true_t = 2.5
    p = softmax(logits, true_t)
    labels = np.array([rng.choice(7, p=row) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)
    # Calibrated probabilities have a small ECE; the overconfident ones (T=1) a large one.
    assert expected_calibration_error(softmax(logits, true_t), labels) < 0.02
    assert expected_calibration_error(softmax(logits), labels) > 0.1


def test_ece_on_a_known_example():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # Bin 0.9: accuracy 0.5 vs confidence 0.9; bin 0.6: accuracy 1.0 vs 0.6; each half the faces.
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


@pytest.mark.slow
@pytest.mark.data
def test_recipe_trains_exports_and_carries_the_temperature(fer_path, tmp_path):
    from fer_export import export_onnx
    from fer_runtime import EmotionRecognizer
    from fer_train.checkpoint import load_checkpoint
    from fer_train.engine import train

    cfg = TrainConfig(arch="vgg-small", data=str(fer_path), out_dir=str(tmp_path), limit=800, epochs=2, batch_size=64,
                      optimizer="sgd", lr=0.05, warmup_epochs=1, mixup=0.2, label_smoothing=0.1,
                      class_weights="sqrt", augment=AugmentConfig(erase=0.25), progress=False)
    train(cfg)
    ckpt = load_checkpoint(tmp_path / "best.pt")
    cal = ckpt["metrics"]["calibration"]
    assert ckpt["temperature"] == cal["temperature"] > 0
    assert {"val_ece_before", "val_ece_after", "test_ece_before", "test_ece_after"} <= set(cal)
    report = export_onnx(tmp_path / "best.pt", tmp_path / "m.onnx", data=fer_path)
    assert report.parity.passed
    rec = EmotionRecognizer(tmp_path / "m.onnx")
    assert rec.info.temperature == pytest.approx(ckpt["temperature"])
    assert rec.info.metadata.arch == "vgg-small"
