"""kill -9 at bad moments: training resumes to the same weights, fer-predict's output parses, fer-export
leaves no half-written model. Short versions of ``python -m fer_bench.reliability kill-*``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fer_bench.checkout import checkout_path
from fer_bench.reliability import kill_export, kill_predict, kill_training, predict_inputs, staged_files
from fer_runtime import EmotionRecognizer

pytestmark = pytest.mark.slow


@pytest.mark.data
def test_training_killed_three_times_resumes_to_the_uninterrupted_weights(fer_path, tmp_path):
    result = kill_training(fer_path, tmp_path, kills=3, seed=1)
    assert result["killed_by_signal"] == 3 and result["of_which_resumed_after_kills"] >= 1
    assert result["same_final_weights"], result


def test_predict_killed_over_a_folder_and_a_video_leaves_parseable_rows(tmp_path):
    result = kill_predict(predict_inputs(tmp_path), tmp_path, kills=4, seed=3)
    assert result["bad_outputs"] == 0, result
    assert any(run["returncode"] == -9 and 0 < run["rows"] < run["of"] for run in result["runs"]), result


@pytest.mark.data
def test_export_killed_while_writing_leaves_no_model_and_the_next_export_completes(fer_path, tmp_path):
    seed = checkout_path("models/seed/best.pt")
    (run,) = kill_export(seed, tmp_path, kills=0, data=fer_path)["runs"]
    assert run["returncode"] == -9 and run["target"] == "absent"
    assert staged_files(tmp_path)  # what was being written stays in a hidden staging folder, never at the target
    target = tmp_path / "m0.onnx"
    done = subprocess.run([sys.executable, "-m", "fer_export", str(seed), "-o", str(target), "--data", str(fer_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert EmotionRecognizer(target).predict_proba(np.zeros((48, 48), np.uint8)).shape == (1, 7)
    assert not list(tmp_path.glob(".fer-export-*"))  # the killed run's staging folder was swept
