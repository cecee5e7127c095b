"""fer-bench: the statistics helpers, FLOP counting, a quick run's outputs, the CLI's errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from fer_bench.flops import count_flops
from fer_bench.stats import interleaved, paired_ratio, parse_int_list, percentiles
from fer_train.models import build_model


def test_percentiles_on_known_values():
    p = percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p["p50_ms"] == pytest.approx(50.5) and p["p90_ms"] == pytest.approx(90.1) and p["p99_ms"] == pytest.approx(99.01)
    assert p["mean_ms"] == pytest.approx(50.5) and p["runs"] == 100
    with pytest.raises(ValueError):
        percentiles([])


def test_interleaved_schedule_and_paired_ratio():
    assert list(interleaved(["a", "b"], 3)) == [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"), (2, "b")]
    shuffled = list(interleaved(["a", "b", "c"], 20, np.random.default_rng(0)))
    assert all(sorted(n for r, n in shuffled if r == k) == ["a", "b", "c"] for k in range(20))
    assert len({tuple(n for r, n in shuffled if r == k) for k in range(20)}) > 1
    with pytest.raises(ValueError):
        list(interleaved(["a"], 0))
    # Drift that hits both contenders alike cancels in paired ratios.
    slow = [1.0, 2.0, 4.0, 8.0]
    fast = [0.5, 1.0, 2.0, 4.0]
    assert paired_ratio(slow, fast) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_parse_int_list():
    assert parse_int_list("1, 8,32", "--batch-sizes") == [1, 8, 32]
    for bad in ("", "0", "a,b", "-1", "1.5"):
        with pytest.raises(ValueError, match="--batch-sizes"):
            parse_int_list(bad, "--batch-sizes")


def test_flop_count_on_known_models():
    tiny = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 5))
    assert count_flops(tiny, (1, 1, 4, 4)) == 2 * (2 * 4 * 4 * 9) + 2 * 32 * 5
    assert count_flops(tiny, (3, 1, 4, 4)) == count_flops(tiny, (1, 1, 4, 4))  # per image
    seed = build_model("seed")
    by_hand = 2 * (16 * 48 * 48 * 9 * 1 + 64 * 24 * 24 * 9 * 16 + 128 * 12 * 12 * 9 * 64 + 256 * 6 * 6 * 9 * 128
                   + 2304 * 128 + 128 * 84 + 84 * 7)
    assert count_flops(seed) == by_hand == 54_360_216
    assert seed.training  # left as found


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_bench", *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
@pytest.mark.data
def test_quick_run_writes_valid_json_markdown_and_png(tmp_path, fer_path):
    done = _bench("--quick", "--model", "seed", "--batch-sizes", "1,4", "--threads", "1", "--data", str(fer_path),
                  "--no-progress", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "fer_bench.json").read_text())
    acc = result["accuracy"]["backends"]
    assert list(acc)[:2] == ["pytorch-fp32", "ort-fp32"] and {"ort-int8", "ort-fp16"} <= set(acc)
    assert acc["ort-fp32"]["argmax_agreement"] == 1.0 and acc["ort-fp32"]["max_abs_logit_diff"] <= 1e-4
    assert abs(acc["ort-int8"]["accuracy"] - acc["ort-fp32"]["accuracy"]) <= 0.005
    assert result["accuracy"]["faces"] == 3589
    cells = result["latency"]["cells"]
    assert {(c["batch"], c["mode"]) for c in cells} == {(1, "model"), (4, "model"), (1, "end_to_end"), (4, "end_to_end")}
    for c in cells:
        assert c["p50_ms"] <= c["p90_ms"] <= c["p99_ms"] and c["images_per_second"] > 0 and c["runs"] >= 5
        assert "fraction_of_peak" in c  # its value moves with the machine's load: reported by the benchmark, not bounded here
    assert all(c["speedup_vs_pytorch"] == 1.0 for c in cells if c["backend"] == "pytorch-fp32")
    assert result["latency"]["flops_per_image"] == 54_360_216 and result["latency"]["peak_gflops"]["1"] > 0
    assert result["environment"]["logical_cpus"] >= 1 and result["environment"]["versions"]["onnxruntime"]
    md = (tmp_path / "fer_bench.md").read_text()
    assert "## Accuracy on PublicTest" in md and "### Model only" in md and "| ort-int8 |" in md
    assert (tmp_path / "fer_bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speed-up" in done.stdout


@pytest.mark.slow
def test_without_data_latency_still_runs_and_says_how_to_get_data(tmp_path):
    import os

    env = {**os.environ, "FER2013_PATH": str(tmp_path / "nowhere.csv")}
    done = _bench("-v", "--quick", "--model", "seed", "--batch-sizes", "2", "--threads", "1", "--no-progress", "-o",
                  str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "session on ['CPUExecutionProvider']" in done.stderr  # -v: the debug logs
    assert "accuracy: not run" in done.stdout and "FER2013_PATH" in done.stdout
    result = json.loads((tmp_path / "fer_bench.json").read_text())
    assert "accuracy" not in result and result["latency"]["cells"]
    done = _bench("accuracy", "--no-progress", "-o", str(tmp_path), env=env)
    assert done.returncode == 1 and done.stderr.startswith("error:") and "Traceback" not in done.stderr


def test_cli_errors(tmp_path):
    done = _bench("latency", "--batch-sizes", "0,8", "--no-progress")
    assert done.returncode == 2 and "--batch-sizes" in done.stderr
    done = _bench("latency", "--threads", "two", "--no-progress")
    assert done.returncode == 2 and "--threads" in done.stderr
    done = _bench("latency", "--model", str(tmp_path / "missing.onnx"), "--no-progress")
    assert done.returncode == 1 and "no such model file" in done.stderr and "Traceback" not in done.stderr
    done = _bench("latency", "--model", "seed", "--checkpoint", str(tmp_path / "missing.pt"), "--no-progress")
    assert done.returncode == 1 and "no such checkpoint" in done.stderr
    done = _bench("--help")
    assert done.returncode == 0 and "accuracy" in done.stdout and "latency" in done.stdout


@pytest.mark.data
def test_twin_must_match_the_model(tmp_path):
    from fer_bench.backends import BenchError, load_twin
    from fer_train.checkpoint import load_checkpoint, save_checkpoint
    from fer_bench.backends import bundled_twin

    model, ckpt, path = load_twin("seed", None)
    assert ckpt["arch"] == "seed" and path == bundled_twin("seed")
    other = load_checkpoint(path)
    other["epoch"] = 1
    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(BenchError, match="not the checkpoint seed was exported from"):
        load_twin("seed", tmp_path / "other.pt")
    x = torch.zeros(1, 1, 48, 48)
    assert model(x).shape == (1, 7)
    assert np.isfinite(model(x).detach().numpy()).all()


def test_arch_spec_parsing():
    from fer_bench.candidates import parse_spec

    assert parse_spec("vgg") == ("vgg", {})
    assert parse_spec("vgg-small:widths=24-48-96-192,dropout=0.2") == (
        "vgg-small", {"widths": (24, 48, 96, 192), "dropout": 0.2})
    assert parse_spec("vgg:blocks=1-2-2-3,dropout=0") == ("vgg", {"blocks": (1, 2, 2, 3), "dropout": 0.0})
    assert parse_spec("vgg:widths=64,blocks=1") == ("vgg", {"widths": (64,), "blocks": (1,)})  # one stage
    bad = {
        "nope": "unknown architecture 'nope'",
        "vgg:widths": "key=value",
        "vgg:=3": "key=value",
        "vgg:widths=a-b": "widths must be dash-separated integers",
        "vgg:widths=24.0-48-96-192": "widths must be dash-separated integers",
        "vgg:dropout=high": "dropout must be float",
        "seed:padding=0.5": "padding must be int",
        "vgg:foo=1": "'foo' cannot be overridden; vgg takes blocks, dropout, widths",
        "vgg:input_size=64": "'input_size' cannot be overridden",
        "vgg:widths=8-16": "equal length",
    }
    for spec, message in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_spec(spec)


@pytest.mark.slow
def test_arch_times_untrained_candidates(tmp_path):
    from fer_bench.candidates import run_candidates
    from fer_train.models import build_model, count_parameters

    specs = ["vgg-small:widths=8-16-32-64", "vgg-small:widths=64-128-256-512"]  # 64x the FLOPs
    result = run_candidates(specs, [1], rounds=20)
    assert [c["parameters"] for c in result["candidates"]] == [
        count_parameters(build_model("vgg-small", widths=(8, 16, 32, 64))),
        count_parameters(build_model("vgg-small", widths=(64, 128, 256, 512)))]
    rows = {(r["spec"], r["precision"]): r for r in result["latency"]}
    assert len(rows) == 4 and all(r["runs"] == 20 and r["p50_ms"] > 0 for r in rows.values())
    for precision in ("fp32", "int8"):  # the timed files are the candidates', and the ratio says so
        assert rows[(specs[1], precision)]["ratio_to_first"] > 1.5
    with pytest.raises(ValueError, match="once"):
        run_candidates([specs[0], specs[0]], [1], rounds=10)

    done = _bench("arch", specs[0], "--threads", "1", "--rounds", "10", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "| `vgg-small:widths=8-16-32-64` |" in done.stdout and (tmp_path / "arch.json").is_file()
    for spec, message in (("nope", "unknown architecture 'nope'"), ("vgg:widths=32-64", "equal length")):
        bad = _bench("arch", spec, "--rounds", "10")
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_arch_times_bundled_trained_models_as_shipped():
    from fer_bench.candidates import run_candidates
    from fer_train.models import build_model, count_parameters

    result = run_candidates(["model:vgg-small", "model:seed"], [1], rounds=10)
    assert [(c["arch"], c["bundled"], c["parameters"]) for c in result["candidates"]] == [
        ("vgg-small", "vgg-small", count_parameters(build_model("vgg-small"))),
        ("seed", "seed", count_parameters(build_model("seed")))]
    assert sorted((r["spec"], r["precision"]) for r in result["latency"]) == [
        ("model:seed", "fp32"), ("model:seed", "int8"), ("model:vgg-small", "fp32"), ("model:vgg-small", "int8")]
    for spec in ("model:nope", "model:vgg-small-int8"):  # unknown, or no int8 sibling to time beside it
        with pytest.raises(ValueError, match="no bundled fp32 model"):
            run_candidates([spec], [1], rounds=10)


def test_a_bundled_candidate_is_the_shipped_bytes(tmp_path):
    from fer_bench.candidates import _bundled_candidate
    from fer_runtime.bundled import read_bundled

    c = _bundled_candidate("model:vgg-small", tmp_path, 0)
    assert c["files"]["fp32"].read_bytes() == read_bundled("vgg-small")
    assert c["files"]["int8"].read_bytes() == read_bundled("vgg-small-int8")


def _fake_result(with_accuracy: bool) -> dict:
    cells = [{"mode": mode, "backend": backend, "threads": threads, "batch": batch, "p50_ms": 0.1 * batch * (3 - threads) + k,
              "images_per_second": 1.0}
             for mode in ("model", "end_to_end") for k, backend in enumerate(("pytorch-fp32", "ort-fp32", "ort-int8"))
             for threads in (1, 2) for batch in (1, 8, 256)]
    result = {"model": {"model": "seed"}, "environment": {"cpu": "test CPU"}, "latency": {"cells": cells}}
    if with_accuracy:
        result["accuracy"] = {"split": "PrivateTest", "faces": 3589, "backends": {
            "pytorch-fp32": {"accuracy": 0.6105}, "ort-fp32": {"accuracy": 0.6105}, "ort-int8": {"accuracy": 0.6097}}}
    else:
        result["accuracy_skipped"] = "no FER2013 at nowhere.csv"
    return result


def test_plot_tells_thread_counts_apart_keeps_the_legend_off_the_data_and_shows_accuracy(tmp_path):
    import matplotlib.pyplot as plt

    from fer_bench.report import figure, plot

    fig = figure(_fake_result(with_accuracy=True))
    try:
        latency_axes, acc_ax = fig.axes[:2], fig.axes[2]
        assert len(fig.axes) == 3
        for ax in latency_axes:
            styles = {}
            for line in ax.get_lines():
                threads = line.get_label().rsplit(", ", 1)[1]
                styles.setdefault(threads, set()).add((line.get_linestyle(), line.get_marker()))
            assert set(styles) == {"1 thread", "2 threads"}
            assert all(len(s) == 1 for s in styles.values()) and styles["1 thread"] != styles["2 threads"]
            # same thread count, different backends: different colours
            colors = {tuple(line.get_color()) for line in ax.get_lines() if line.get_label().endswith("1 thread")}
            assert len(colors) == 3
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(renderer)
        assert len(fig.legends[0].get_texts()) == 6
        for ax in fig.axes:
            assert not legend.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        texts = [t.get_text() for t in acc_ax.texts]
        assert texts == ["61.05%", "61.05%", "60.97%"] and "PrivateTest" in acc_ax.get_title()
        ticks = {t.get_text(): y for t, y in zip(acc_ax.get_yticklabels(), acc_ax.get_yticks())}
        assert max(ticks, key=ticks.get) == "pytorch-fp32" and set(ticks) == {"pytorch-fp32", "ort-fp32", "ort-int8"}
    finally:
        plt.close(fig)
    fig = figure(_fake_result(with_accuracy=False))
    try:
        assert "no FER2013 at nowhere.csv" in fig.axes[2].texts[0].get_text()
    finally:
        plt.close(fig)
    plot(_fake_result(with_accuracy=True), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_scores_the_split_asked_for_privatetest_included(tmp_path):
    import os

    from fer_runtime import EmotionRecognizer

    # Kaggle's fer2013.csv layout, with synthetic PrivateTest rows (the tests never read real PrivateTest faces).
    rng = np.random.default_rng(0)
    counts = {"Training": 4, "PublicTest": 5, "PrivateTest": 7}
    rows, private = ["emotion,pixels,Usage"], []
    for usage, n in counts.items():
        for _ in range(n):
            face, label = rng.integers(0, 256, 48 * 48, dtype=np.uint8), int(rng.integers(0, 7))
            rows.append(f"{label},{' '.join(map(str, face))},{usage}")
            if usage == "PrivateTest":
                private.append((face.reshape(48, 48), label))
    csv = tmp_path / "fer2013.csv"
    csv.write_text("\n".join(rows) + "\n")
    env = {**os.environ, "FER_CACHE_DIR": str(tmp_path / "cache")}
    done = _bench("accuracy", "--model", "seed", "--data", str(csv), "--split", "PrivateTest", "--no-progress",
                  "-o", str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    acc = json.loads((tmp_path / "out" / "fer_bench.json").read_text())["accuracy"]
    assert acc["split"] == "PrivateTest" and acc["faces"] == counts["PrivateTest"]
    faces, labels = np.stack([f for f, _ in private]), np.array([l for _, l in private])
    expected = float((EmotionRecognizer("seed", precision="fp32").predict_proba(faces).argmax(1) == labels).mean())
    assert acc["backends"]["ort-fp32"]["accuracy"] == pytest.approx(expected)
    assert "## Accuracy on PrivateTest (7 faces" in (tmp_path / "out" / "fer_bench.md").read_text()
    done = _bench("accuracy", "--model", "seed", "--data", str(csv), "--split", "Private", "--no-progress",
                  "-o", str(tmp_path / "out2"), env=env)
    assert done.returncode == 1 and "PrivateTest" in done.stderr and "Traceback" not in done.stderr


def test_runtime_steps_time_every_step_of_one_call():
    from fer_bench.runtime import measure_steps

    result = measure_steps("vgg-taper-int8", threads=1, rounds=2, calls=3)
    assert result["model"] == "bundled:vgg-taper-int8" and result["rounds"] == 2
    assert set(result["steps_us"]) == {"preprocess, single-face path", "preprocess, batch path (before)",
                                       "session.run on the ready tensor", "calibrated softmax",
                                       "predict_proba, whole call"}
    assert all(us > 0 for us in result["steps_us"].values())
