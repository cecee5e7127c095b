"""tools/gpu_check.sh on the CPU path: the same script a CUDA machine runs, with --device cpu and tiny sizes.

It runs with the repository's source folders on PYTHONPATH (not the installed package), as on a machine that
has PyTorch but not this project."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_cpu(fer_path, tmp_path):
    subset = tmp_path / "subset.csv.gz"
    made = subprocess.run(["bash", str(SCRIPT), "--subset", "1500", "--data", str(fer_path), "--out", str(subset)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    with gzip.open(subset, "rt") as f:
        usages = [line.rsplit(",", 1)[-1].strip() for line in f][1:]
    assert usages.count("Training") == 1500 and usages.count("PublicTest") == 3589
    out = tmp_path / "check"
    env = {**os.environ, "FER_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--data", str(subset), "--out", str(out),
                           "--epochs", "1", "--limit", "1000"], capture_output=True, text=True, timeout=900, env=env)
    summary = json.loads((out / "summary.json").read_text())
    assert done.returncode == 0, (summary, (out / "steps.log").read_text()[-3000:])
    assert summary["passed"] and all(summary["steps"].values())
    assert summary["first_steps_loss"]["abs_diff"] < 1e-4  # CPU against CPU: the same run twice
    assert len(summary["images_per_second"]) == 1 and summary["images_per_second"][0] > 0
    assert summary["export"]["parity"]["max_abs_diff"] <= 1e-4
    assert json.loads((out / "environment.json").read_text())["torch"]


def test_gpu_check_refuses_what_it_cannot_run(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--data", str(tmp_path / "none.csv")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "FER2013 file needed" in done.stderr
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown option" in done.stderr
