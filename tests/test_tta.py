"""Accuracy modes: test-time views and ensembles, in the library, the pipeline and fer-predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_runtime import ConfigError, EmotionRecognizer, preprocess
from fer_runtime.tta import POSITIONS, TTA_MODES, Views

PHOTO = Path(__file__).parent / "data" / "photos" / "astronaut.jpg"


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"))
    rng = np.random.default_rng(0)
    return [rgb[60:230, 70:220], rgb[50:200, 60:240], rng.integers(0, 256, (61, 47), dtype=np.uint8)]


def test_a_flipped_view_is_the_preprocessing_of_the_mirrored_face(faces):
    x = preprocess(faces)
    mirrored = preprocess([np.ascontiguousarray(f[:, ::-1]) for f in faces])
    views = TTA_MODES["flip"].apply(x)
    assert views.shape == (2, *x.shape)
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[1], mirrored)  # equalization does not change under a mirror


def test_crop_views_resample_windows_back_to_the_input_size(faces):
    x = preprocess(faces)
    views = Views(margin=4, positions="five", flip=True)
    out = views.apply(x)
    assert out.shape == (10, *x.shape) and views.count == 10 and out.dtype == np.float32
    flat = np.full((1, 1, 48, 48), 0.25, np.float32)  # a flat face stays flat whatever the window
    np.testing.assert_allclose(views.apply(flat), 0.25, atol=1e-6)
    ramp = np.tile(np.arange(48, dtype=np.float32), (48, 1))[None, None]
    left, right = Views(margin=4, positions="five").apply(ramp)[[1, 2], 0, 0, 0]
    assert left.mean() < ramp.mean() < right.mean()  # the corner crops look at different parts
    assert len(POSITIONS["nine"]) == 9
    shifted = Views(margin=2, positions="five", resize=False).apply(ramp)[:, 0, 0]
    np.testing.assert_array_equal(shifted[0], ramp[0, 0])  # the centre view is the face itself
    np.testing.assert_array_equal(shifted[1][:, 1:], ramp[0, 0][:, :-1])  # moved right by one pixel...
    np.testing.assert_array_equal(shifted[1][:, 0], ramp[0, 0][:, 0])  # ...its left edge repeated


def test_modes_average_their_views_probabilities(faces):
    plain = EmotionRecognizer("vgg-taper-int8")
    flip = EmotionRecognizer("vgg-taper-int8", tta="flip")
    mirrored = [np.ascontiguousarray(f[:, ::-1]) for f in faces]
    expected = (plain.predict_proba(faces) + plain.predict_proba(mirrored)) / 2
    np.testing.assert_allclose(flip.predict_proba(faces), expected, atol=1e-6)
    crops = EmotionRecognizer("vgg-taper-int8", tta="crops").predict_proba(faces)
    assert crops.shape == (3, 7) and np.allclose(crops.sum(1), 1, atol=1e-5)
    assert not np.allclose(crops, expected, atol=1e-4)


def test_an_ensemble_averages_its_members_calibrated_probabilities(faces):
    members = ["vgg-taper-int8", "vgg-deep-int8"]
    ensemble = EmotionRecognizer(ensemble=members)
    expected = np.mean([EmotionRecognizer(m).predict_proba(faces) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict_proba(faces), expected, atol=1e-6)
    assert ensemble.info.source == "ensemble(bundled:vgg-taper-int8, bundled:vgg-deep-int8)"
    with pytest.raises(ConfigError, match="no logits of its own"):
        ensemble.logits(preprocess(faces))


def test_detect_and_video_use_the_accuracy_modes():
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    plain, flip = EmotionRecognizer("vgg-taper-int8"), EmotionRecognizer("vgg-taper-int8", tta="flip")
    a, b = plain.detect(image)[0], flip.detect(image)[0]
    assert a.box == b.box and not np.allclose(a.prediction.vector, b.prediction.vector)
    from fer_runtime import VideoAnalyzer

    (frame,) = VideoAnalyzer(flip.pipeline).run([image])
    np.testing.assert_allclose(frame.faces[0].prediction.vector, b.prediction.vector, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"tta": "tencrop"}, {"tta": 3}, {"model": "vgg-deep", "ensemble": ["vgg"]},
                                    {"ensemble": "vgg"}, {"ensemble": []}])
def test_bad_accuracy_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        EmotionRecognizer(**kwargs)
    with pytest.raises(ConfigError):
        Views(margin=40)


def test_fer_predict_takes_tta_and_ensemble():
    def run(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "fer_runtime", str(PHOTO), "--json", *args], capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    flip = run("--model", "vgg-taper-int8", "--tta", "flip")
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    face = EmotionRecognizer("vgg-taper-int8", tta="flip").detect(image)[0]
    assert flip["p_Happy"] == round(face.prediction.probabilities["Happy"], 6)
    both = run("--ensemble", "vgg-taper-int8,vgg-deep-int8")
    assert both["label"] in face.prediction.labels
    bad = subprocess.run([sys.executable, "-m", "fer_runtime", str(PHOTO), "--model", "vgg", "--ensemble", "vgg,seed"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not both" in bad.stderr
