"""fer-bench crops / detect: the scene builders, the matching, the study and the reports (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fer_bench.detection import REPORT_GRID, crop_study, crops_markdown, detect_markdown, eight_faces, recall_by_width
from fer_bench.scenes import Truth, fer_scene, iou, match, multi_face_frame, photo_faces
from fer_runtime import CropConfig, EmotionRecognizer, FaceDetector


def test_iou_and_greedy_matching():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3)
    truths = [Truth(5, 5, 10, 10), Truth(55, 55, 10, 10)]
    owner, fp = match([(50, 50, 10, 10), (0, 0, 10, 10), (200, 200, 9, 9)], truths)
    assert owner == [1, 0] and fp == 1
    owner, fp = match([(1, 1, 10, 10), (0, 0, 10, 10)], truths[:1])  # one truth, two boxes: one is a false positive
    assert owner == [1] and fp == 1


def test_scenes_hold_what_they_say(rng):
    frame, truth = fer_scene(np.full((48, 48), 255, np.uint8), rng, sides=(100, 100), max_angle=0)
    assert frame.shape == (360, 480, 3) and truth.w == 100
    x, y = int(truth.cx - 50), int(truth.cy - 50)
    assert (frame[y + 3 : y + 97, x + 3 : x + 97] == 255).all()  # the pasted face, where the truth says
    faces = photo_faces(FaceDetector(min_face=1, max_size=4096))
    assert len(faces) == 6  # three photos and their mirror images
    frame, truths = multi_face_frame(faces, [40, 80, 120], rng, (480, 640))
    assert len(truths) == 3 and [round(t.w) for t in truths] == [40, 80, 120]
    boxes = [(t.cx - t.w / 2, t.cy - t.h / 2, t.w, t.h) for t in truths]
    assert all(iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])  # faces never overlap


@pytest.mark.data
def test_crop_study_and_its_report(fer_data):
    part = fer_data.split("PublicTest")
    rec = EmotionRecognizer("vgg-taper-int8")
    study = crop_study(part.images[:24], part.labels[:24], {"taper": rec}, FaceDetector(), REPORT_GRID[:2])
    assert 12 <= study["detected"] <= 24 and sum(study["missed_by_side"]) == 24 - study["detected"]
    scores = study["classifiers"]["taper"]
    assert set(scores["framings"]) == {"scale 0.95, shift -0.05, square, aligned", "scale 0.95, shift -0.05, square, upright"}
    assert all(0 <= v <= 1 for v in [scores["plain"], scores["true_framing"], *scores["framings"].values()])
    table = crops_markdown(study)
    assert "plain crops" in table and "| scale 0.95, shift -0.05, square, aligned |" in table
    assert CropConfig() == REPORT_GRID[0]


def test_recall_and_eight_faces_reports():
    recall = recall_by_width(FaceDetector(), [12, 40], placements=1)
    assert recall["by_width"]["40"]["recall"] == 1.0 and recall["by_width"]["12"]["recall"] < 1.0
    target = eight_faces(FaceDetector(), layouts=1)
    assert target["all_found"] and target["false_positives"] == 0
    assert "Eight faces 32-180 px" in detect_markdown({"recall": recall, "eight_faces": target})


def test_crops_command_refuses_bad_options():
    done = subprocess.run([sys.executable, "-m", "fer_bench", "crops", "--model", "vgg", "--split", "PrivateTest"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--split must be" in done.stderr
    done = subprocess.run([sys.executable, "-m", "fer_bench", "detect", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "eight-face" in done.stdout
