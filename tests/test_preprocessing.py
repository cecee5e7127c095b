"""fer_runtime preprocessing against OpenCV as the oracle."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_runtime import PreprocessConfig, equalize_hist, faces_to_uint8, preprocess, resize, to_gray
from fer_runtime.errors import InputError


def test_equalize_hist_bit_exact_on_random_images(rng):
    for _ in range(400):
        h, w = rng.integers(1, 70, 2)
        lo, hi = sorted(rng.integers(0, 256, 2))
        img = rng.integers(lo, hi + 1, (h, w)).astype(np.uint8)
        np.testing.assert_array_equal(equalize_hist(img), cv2.equalizeHist(img))


def test_equalize_hist_edge_cases():
    for img in (np.zeros((48, 48), np.uint8), np.full((48, 48), 255, np.uint8), np.full((5, 7), 77, np.uint8)):
        np.testing.assert_array_equal(equalize_hist(img), cv2.equalizeHist(img))
    two = np.array([[0, 255], [255, 255]], np.uint8)
    np.testing.assert_array_equal(equalize_hist(two), cv2.equalizeHist(two))
    with pytest.raises(InputError, match="uint8"):
        equalize_hist(np.zeros((4, 4), np.float32))


def _one_face_oracle(face: np.ndarray) -> np.ndarray:
    return (cv2.equalizeHist(face).astype(np.float32) * np.float32(1 / 255)).reshape(1, 1, *face.shape)


def test_one_face_takes_its_own_path_with_the_batch_paths_bits(rng):
    """preprocess of a single face has a shorter path (batch-1 latency): the same bits as OpenCV and
    as the same face inside a batch, flat and two-level faces included."""
    faces = [rng.integers(lo, hi + 1, (48, 48)).astype(np.uint8)
             for lo, hi in (sorted(rng.integers(0, 256, 2)) for _ in range(300))]
    faces += [np.zeros((48, 48), np.uint8), np.full((48, 48), 200, np.uint8), np.eye(48, dtype=np.uint8) * 255]
    batch = preprocess(np.stack(faces))
    for i, face in enumerate(faces):
        one = preprocess(face)
        np.testing.assert_array_equal(one, batch[i : i + 1])
        np.testing.assert_array_equal(one, _one_face_oracle(face))


@pytest.mark.data
def test_equalize_hist_bit_exact_on_every_fer2013_face(fer_data):
    ours = equalize_hist(fer_data.images)  # one vectorised call over all 32k faces
    for i, face in enumerate(fer_data.images):
        if not np.array_equal(ours[i], cv2.equalizeHist(face)):
            pytest.fail(f"face {i} differs from cv2.equalizeHist")
    for i in range(0, len(fer_data.images), 7):  # the single-face path, on a seventh of them
        if not np.array_equal(preprocess(fer_data.images[i]), _one_face_oracle(fer_data.images[i])):
            pytest.fail(f"face {i}: the single-face path differs from cv2.equalizeHist")


def test_gray_matches_cvtcolor(rng):
    img = rng.integers(0, 256, (61, 47, 3)).astype(np.uint8)
    np.testing.assert_array_equal(to_gray(img, "rgb"), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    np.testing.assert_array_equal(to_gray(img, "bgr"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    rgba = rng.integers(0, 256, (20, 30, 4)).astype(np.uint8)
    np.testing.assert_array_equal(to_gray(rgba, "bgr"), cv2.cvtColor(rgba, cv2.COLOR_BGRA2GRAY))
    np.testing.assert_array_equal(to_gray(img[:, :, :1]), img[:, :, 0])


@pytest.mark.parametrize("shape", [(100, 120), (96, 96), (49, 200), (480, 640), (30, 20), (24, 24), (47, 47), (48, 48)])
def test_resize_within_one_grey_level_of_opencv(rng, shape):
    img = rng.integers(0, 256, shape).astype(np.uint8)
    shrinking = shape[0] >= 48 and shape[1] >= 48
    ref = cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    diff = np.abs(resize(img, 48).astype(int) - ref.astype(int))
    assert diff.max() <= 1


def test_preprocess_output_contract(rng):
    faces = rng.integers(0, 256, (5, 48, 48)).astype(np.uint8)
    x = preprocess(faces)
    assert x.shape == (5, 1, 48, 48) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    expected = equalize_hist(faces).astype(np.float32) / 255.0
    np.testing.assert_allclose(x[:, 0], expected, atol=1e-7)
    standardised = preprocess(faces, PreprocessConfig(mean=0.5, std=0.25))
    np.testing.assert_allclose(standardised[:, 0], (expected - 0.5) / 0.25, atol=1e-5)
    plain = preprocess(faces, PreprocessConfig(equalize=False))
    np.testing.assert_allclose(plain[:, 0], faces / 255.0, atol=1e-7)


def test_preprocess_mixed_inputs(rng):
    color = rng.integers(0, 256, (90, 70, 3)).astype(np.uint8)
    gray_float = rng.uniform(0, 255, (48, 48))
    x = preprocess([color, gray_float])
    assert x.shape == (2, 1, 48, 48)
    single = preprocess(color)
    np.testing.assert_array_equal(single[0], x[0])
    assert faces_to_uint8(rng.integers(0, 256, (3, 60, 60)).astype(np.uint8)).shape == (3, 48, 48)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        preprocess(np.zeros((0, 10), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        preprocess(np.full((48, 48), np.nan))
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.zeros((48, 48, 5), np.uint8)[None])
    with pytest.raises(ValueError, match="no images"):
        preprocess([])
    with pytest.raises(ValueError, match="color_order"):
        to_gray(np.zeros((4, 4, 3), np.uint8), "hsv")  # type: ignore[arg-type]
    cfg = PreprocessConfig(size=32, mean=0.1)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


def test_one_model_sized_face_takes_the_short_path_with_the_same_result(rng):
    """predict_proba's batch-1 path for a grey uint8 48x48 face gives exactly the general path's
    answer; other shapes, dtypes and a max_pixels below the face's size still go the long way."""
    from fer_runtime import EmotionRecognizer, InputError

    rec = EmotionRecognizer("vgg-taper-int8", threads=1)
    face = rng.integers(0, 256, (48, 48)).astype(np.uint8)
    short = rec.predict_proba(face)
    np.testing.assert_array_equal(short, rec.probabilities(preprocess(face)))
    np.testing.assert_array_equal(short, rec.predict_proba([face]))  # a list: the general path
    np.testing.assert_array_equal(short, rec.predict_proba(face[::1, ::1].copy(order="F")))  # not C-contiguous
    np.testing.assert_allclose(short, rec.predict_proba(np.stack([face, face]))[:1], atol=1e-6)  # batch of 2
    assert rec.predict_proba(face.astype(np.float32)).shape == (1, 7)
    with pytest.raises(InputError, match="max_pixels|pixels"):
        EmotionRecognizer("vgg-taper-int8", max_pixels=100).predict_proba(face)
