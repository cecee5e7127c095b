from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fer_train.cli import eval_app, train_app

runner = CliRunner()


def test_train_help_lists_the_options():
    result = runner.invoke(train_app, ["--help"])
    assert result.exit_code == 0
    for option in ("--arch", "--epochs", "--batch-size", "--lr", "--optimizer", "--data", "--out-dir", "--device",
                   "--seed", "--resume", "--teacher", "--init-from", "--swa-start", "--swa-lr", "--train-on-val", "--temperature-of", "FER2013_PATH"):
        assert option in result.output


def test_eval_help():
    result = runner.invoke(eval_app, ["--help"])
    assert result.exit_code == 0 and "--flip-tta" in result.output


def test_bad_arguments_fail_clearly(tmp_path):
    result = runner.invoke(train_app, ["--epochs", "0"])
    assert result.exit_code == 2
    result = runner.invoke(train_app, ["--optimizer", "rmsprop"])
    assert result.exit_code == 2
    result = runner.invoke(train_app, ["--arch", "resnet9000", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "valid: rep, rep-fast, rep-mid, seed" in result.output
    result = runner.invoke(train_app, ["--data", str(tmp_path / "missing.csv"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "no such file" in result.output
    result = runner.invoke(eval_app, [str(tmp_path / "missing.pt")])
    assert result.exit_code == 1 and "no such checkpoint" in result.output


def test_console_script_errors_are_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fer_train", "--arch", "nope", "-o", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: unknown architecture 'nope'; valid: rep, rep-fast, rep-mid, seed, vgg, vgg-deep, vgg-medium, vgg-small, vgg-taper"]


@pytest.mark.data
@pytest.mark.slow
def test_eval_reports_and_writes_json_and_png(fer_path, tmp_path):
    from fer_train.engine import TrainConfig, train

    train(TrainConfig(data=str(fer_path), out_dir=str(tmp_path), limit=300, epochs=1, batch_size=64, progress=False))
    out = tmp_path / "report" / "eval.json"
    result = runner.invoke(eval_app, [str(tmp_path / "best.pt"), "--data", str(fer_path), "--split", "val", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.output and "flip TTA" in result.output
    report = json.loads(out.read_text())
    assert report["n"] == 2872 and report["split"] == "val"
    assert out.with_suffix(".png").stat().st_size > 0

    # Two checkpoints: their ensemble, the mean of their logits.
    import numpy as np
    from conftest import SEED_CHECKPOINT

    from fer_train.checkpoint import load_checkpoint
    from fer_train.data import load_fer2013, make_splits
    from fer_train.evaluate import checkpoint_logits

    out2 = tmp_path / "ensemble.json"
    pair = [str(tmp_path / "best.pt"), str(SEED_CHECKPOINT)]
    result = runner.invoke(eval_app, [*pair, "--data", str(fer_path), "--split", "val", "--no-flip-tta", "-o", str(out2)])
    assert result.exit_code == 0, result.output
    ensemble = json.loads(out2.read_text())
    assert ensemble["checkpoint"] == pair and ensemble["flip_tta"] is None
    val = make_splits(load_fer2013(fer_path)).val
    mean = np.mean([checkpoint_logits(load_checkpoint(p), val.images)[0] for p in pair], axis=0)
    assert ensemble["single"]["accuracy"] == pytest.approx(float((mean.argmax(1) == val.labels).mean()))
    assert ensemble["single"]["accuracy"] != pytest.approx(report["single"]["accuracy"])


@pytest.mark.parametrize("script", ["fer-train", "fer-eval", "fer-export", "fer-bench"])
def test_a_missing_extra_is_one_line_and_exit_code_2(script, monkeypatch, capsys):
    import importlib.util

    from fer_runtime import extras

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setattr(sys, "argv", [script, "--help"])  # were the check skipped: help and exit code 0
    launch = getattr(extras, script.replace("-", "_"))
    with pytest.raises(SystemExit) as info:
        launch()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {script} needs torch: pip install 'fer-edge[train]'\n"


def test_the_launchers_run_the_tools(monkeypatch, capsys):
    from fer_runtime import extras

    monkeypatch.setattr(sys, "argv", ["fer-eval", "--help"])
    with pytest.raises(SystemExit) as info:
        extras.fer_eval()
    assert info.value.code == 0 and "--flip-tta" in capsys.readouterr().out


def test_every_fer_train_default_is_the_train_config_default():
    import dataclasses
    import inspect
    from enum import Enum
    from pathlib import Path

    from fer_train.augment import AugmentConfig
    from fer_train.cli import INTERNAL_FIELDS, fer_train
    from fer_train.engine import TrainConfig

    cli_only = {"resume", "verbose", "no_augment"}  # how to run, not what to train
    via_augment = {"erase": AugmentConfig().erase}  # options that fill TrainConfig.augment
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    defaults = TrainConfig().to_dict()
    options = inspect.signature(fer_train).parameters
    for name, param in options.items():
        default = param.default.value if isinstance(param.default, Enum) else param.default
        default = str(default) if isinstance(default, Path) else default
        if name in cli_only:
            continue
        expected = via_augment[name] if name in via_augment else defaults[name]
        assert default == expected, f"--{name.replace('_', '-')} defaults to {default!r}, TrainConfig to {expected!r}"
    reachable = set(options) | {"augment"}
    assert set(fields) - reachable == set(INTERNAL_FIELDS), "a TrainConfig field is neither an option nor internal"


def test_choices_are_typed_once():
    from fer_train import choices, cli, engine

    for enum, values in ((cli.Optim, choices.OPTIMIZERS), (cli.Sched, choices.SCHEDULERS),
                         (cli.Device, choices.DEVICES), (cli.Precision, choices.PRECISIONS),
                         (cli.ClassWeights, choices.CLASS_WEIGHTS)):
        assert tuple(e.value for e in enum) == values
    assert engine.OPTIMIZERS is choices.OPTIMIZERS and engine.PRECISIONS is choices.PRECISIONS


def test_arch_names_come_from_the_registry(tmp_path):
    from fer_train.cli import _architecture_names
    from fer_train.models import ARCHITECTURES

    assert _architecture_names("") == sorted(ARCHITECTURES) and _architecture_names("vgg-s") == ["vgg-small"]
    result = runner.invoke(train_app, ["--arch", "nope", "-o", str(tmp_path)])
    assert result.exit_code == 1 and f"valid: {', '.join(sorted(ARCHITECTURES))}" in result.output
