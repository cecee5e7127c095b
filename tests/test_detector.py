"""The YuNet face detector (NumPy decoding against OpenCV as the oracle), frames, crops and the pipeline."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_runtime import (
    ConfigError,
    CropConfig,
    Detection,
    EmotionRecognizer,
    Face,
    FaceDetector,
    FacePipeline,
    InputError,
    ModelError,
    ModelIntegrityError,
)
from fer_bench.scenes import oracle_images
from fer_runtime import bundled as bundled_mod
from fer_runtime.detector import decode, nms
from fer_runtime.frames import crop_gray, shrink

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "tests" / "data" / "photos"
FACE_PHOTOS = ["astronaut.jpg", "grace_hopper.jpg", "cameraman.jpg"]
NO_FACE_PHOTOS = ["chelsea.jpg", "coffee.jpg", "gravel.jpg"]
YUNET_640 = REPO.parent / "shared" / "thirdparty" / "yunet" / "yunet_s_640_640.onnx"


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def rec() -> EmotionRecognizer:
    return EmotionRecognizer("vgg-taper-int8")


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def test_decoder_matches_opencv_facedetectoryn():
    # yunet_s_640_640.onnx is the OpenCV zoo's face_detection_yunet_2023mar.onnx; same weights as the bundled file.
    oracle = cv2.FaceDetectorYN.create(str(YUNET_640), "", (640, 640), 0.6, 0.3, 5000)
    ours = FaceDetector(min_face=1, max_size=640, score_threshold=0.6, nms_threshold=0.3)
    assert ours.working_size(640, 640) == (640, 640)
    counts = []
    for rgb in oracle_images():
        img = np.ascontiguousarray(rgb[:, :, ::-1])
        _, ref = oracle.detect(img)
        ref = np.zeros((0, 15), np.float32) if ref is None else ref
        got = ours.detect(img, color_order="bgr")
        counts.append(len(got))
        assert len(got) == len(ref)
        ref = ref[np.argsort(-ref[:, 14], kind="stable")]
        for r, d in zip(ref, got):
            np.testing.assert_allclose(d.box, r[:4], atol=1.0)
            np.testing.assert_allclose(np.ravel(d.landmarks), r[4:14], atol=1.0)
            assert abs(d.score - r[14]) < 1e-3
    assert counts[:3] == [1, 1, 1] and counts[3:6] == [0, 0, 0] and counts[6] >= 6  # the check has teeth


def test_nms_edge_cases():
    empty = np.zeros((0, 4), np.float32)
    assert nms(empty, np.zeros(0, np.float32), 0.3).tolist() == []
    one = np.array([[10, 10, 20, 20]], np.float32)
    assert nms(one, np.array([0.9], np.float32), 0.3).tolist() == [0]
    same = np.repeat(one, 3, axis=0)
    assert nms(same, np.array([0.7, 0.9, 0.9], np.float32), 0.3).tolist() == [1]  # ties: the first best
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10], [0, 0, 0, 0]], np.float32)
    assert nms(boxes, np.array([0.6, 0.8, 0.7, 0.65], np.float32), 0.3).tolist() == [1, 2, 3]
    # IoU of [0,0,10,10] and [5,0,10,10] is 1/3: kept at 0.4, dropped at 0.3
    pair = np.array([[0, 0, 10, 10], [5, 0, 10, 10]], np.float32)
    assert nms(pair, np.array([0.9, 0.8], np.float32), 0.4).tolist() == [0, 1]
    assert nms(pair, np.array([0.9, 0.8], np.float32), 0.3).tolist() == [0]


def test_decode_with_nothing_above_threshold(detector):
    blob = np.zeros((1, 3, 64, 96), np.float32)
    boxes, scores, marks = decode(detector.run(blob), blob.shape[2:], 0.99)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and marks.shape == (0, 5, 2)


@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (1, 400), (75, 100, 4), (64, 48, 1), (40, 41, 2), (33, 65, 3)])
def test_frames_of_odd_sizes_and_layouts(detector, rng, shape):
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    found = detector.detect(frame)
    assert isinstance(found, list) and all(isinstance(d, Detection) for d in found)


@pytest.mark.parametrize("bad", [np.zeros((0, 0), np.uint8), np.zeros((10, 10, 5), np.uint8), np.zeros((2, 8, 8, 3), np.uint8),
                                 np.zeros(7, np.uint8), np.full((20, 20), 0.5)])
def test_bad_frames_are_refused(detector, rec, bad):
    with pytest.raises(InputError):
        detector.detect(bad)
    with pytest.raises(InputError):
        rec.detect(bad)


def test_huge_frames_are_refused_before_work(detector):
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10_000, 10_000, 3))  # a view: no memory spent
    with pytest.raises(InputError, match="max_pixels"):
        detector.detect(huge)
    assert FaceDetector(max_pixels=None).working_size(10_000, 10_000) == (1666, 1666)  # shrunk 6x


@pytest.mark.parametrize("name", NO_FACE_PHOTOS)
def test_no_face_in_a_cat_a_cup_or_gravel(detector, rec, name):
    assert detector.detect(_rgb(name)) == []
    assert rec.detect(PHOTOS / name) == []


def test_faces_found_in_the_photos_with_landmarks(rec):
    for name in FACE_PHOTOS:
        faces = rec.detect(_rgb(name))
        assert len(faces) == 1 and isinstance(faces[0], Face)
        face = faces[0]
        x, y, w, h = face.box
        assert w > 40 and h > 40 and 0.6 < face.detector_score <= 1
        (rx, ry), (lx, ly), (_, ny), (_, my), _ = face.landmarks
        assert rx < lx and max(ry, ly) < ny < my  # the right eye on the image's left; eyes, nose, mouth downwards
        assert face.prediction.label in rec.labels


def test_the_eight_face_target_frame():
    from fer_bench.scenes import multi_face_frame, photo_faces

    faces = photo_faces(FaceDetector(min_face=1, max_size=4096))
    widths = [32, 40, 52, 68, 90, 115, 145, 180]
    frame, truths = multi_face_frame(faces, widths, np.random.default_rng(3), (720, 1280))
    from fer_bench.scenes import match

    owner, false_positives = match([d.box for d in FaceDetector().detect(frame)], truths)
    assert all(o is not None for o in owner) and false_positives == 0


def test_paths_pil_images_and_arrays_agree(rec):
    path = PHOTOS / "astronaut.jpg"
    from_array = rec.detect(_rgb("astronaut.jpg"))
    for source in (path, str(path), Image.open(path)):
        got = rec.detect(source)
        assert [f.box for f in got] == [f.box for f in from_array]
        assert got[0].prediction == from_array[0].prediction
    bgr = rec.detect(_rgb("astronaut.jpg")[:, :, ::-1].copy(), color_order="bgr")
    assert [f.box for f in bgr] == [f.box for f in from_array]


def test_exif_rotated_jpeg_is_found_upright(rec, tmp_path):
    upright = Image.open(PHOTOS / "grace_hopper.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the pixels are stored turned 90 degrees counter-clockwise
    stored = upright.transpose(Image.ROTATE_90)
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert rec.detect(np.asarray(stored)) == []  # read without its EXIF tag, the face lies on its side
    faces = rec.detect(tmp_path / "phone.jpg")
    assert len(faces) == 1
    ref = rec.detect(upright)[0]
    assert np.abs(np.subtract(faces[0].box, ref.box)).max() <= 3


def test_16_bit_png_gives_its_8_bit_prediction(rec, tmp_path):
    gray8 = np.asarray(Image.open(PHOTOS / "astronaut.jpg").convert("L"))
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    p8, p16 = rec.predict(tmp_path / "g8.png")[0], rec.predict(tmp_path / "g16.png")[0]
    assert p8 == p16
    f8, f16 = rec.detect(tmp_path / "g8.png"), rec.detect(tmp_path / "g16.png")
    assert len(f8) == 1 and f8[0].box == f16[0].box and f8[0].prediction == f16[0].prediction


def test_float_frames_in_0_1_are_refused_with_advice(rec):
    frame = _rgb("astronaut.jpg").astype(np.float32) / 255
    with pytest.raises(InputError, match="255"):
        rec.detect(frame)
    assert len(rec.detect(frame * 255)) == 1


def test_recognizer_detect_is_the_pipeline(rec):
    frame = _rgb("cameraman.jpg")
    direct = FacePipeline(rec, FaceDetector(), CropConfig())(frame)
    assert rec.detect(frame) == direct
    assert rec.pipeline.crop == CropConfig()  # the measured default framing
    custom = EmotionRecognizer("vgg-taper-int8", detector=FaceDetector(min_face=200))
    assert custom.detect(frame) == []  # its face is about 90 px wide
    assert custom.pipeline.detector.min_face == 200


def test_boxes_are_clipped_to_the_frame(rec):
    frame = _rgb("astronaut.jpg")[40:]  # the face's top cut off
    faces, found = rec.detect(frame), rec.pipeline.detector.detect(frame)
    assert faces and len(faces) == len(found)
    for face, detection in zip(faces, found):
        x, y, w, h = face.box
        assert x >= 0 and y >= 0 and x + w <= frame.shape[1] and y + h <= frame.shape[0]
        assert detection.box[1] <= y


def test_detector_model_checks(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="not a YuNet"):
        FaceDetector(REPO / "fer_runtime" / "models" / "vgg-taper-int8.onnx")
    with pytest.raises(ModelError, match="no such model file"):
        FaceDetector(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match=r"fixed input size .*dynamic height and width"):
        FaceDetector(YUNET_640)  # the right outputs, but every frame would have to be 640x640
    entry = bundled_mod.BUNDLED_DETECTORS["yunet"]
    monkeypatch.setitem(bundled_mod.BUNDLED_DETECTORS, "yunet", bundled_mod.BundledModel("yunet", entry.filename, "0" * 64, ""))
    with pytest.raises(ModelIntegrityError, match="bundled detector 'yunet' is corrupted"):
        FaceDetector()


def test_detector_parameters_are_checked():
    for kwargs in ({"score_threshold": 1.5}, {"nms_threshold": 0}, {"min_face": 0}, {"max_size": 16}, {"threads": 0},
                   {"color_order": "rgba"}, {"max_pixels": 0}):
        with pytest.raises(ConfigError):
            FaceDetector(**kwargs)
    with pytest.raises(ConfigError):
        CropConfig(scale=10)


def test_working_size_rule():
    d = FaceDetector()  # min_face 20 < 2 x DETECTABLE_PX (24): only max_size shrinks
    assert d.working_size(480, 640) == (480, 640) and d.working_size(1080, 1920) == (1080, 1920)
    assert d.shrink_factor(3024, 4032) == 3 and d.working_size(3024, 4032) == (1008, 1344)
    assert FaceDetector(min_face=48).working_size(720, 1280) == (360, 640)
    assert FaceDetector(min_face=47).working_size(720, 1280) == (720, 1280)  # 23 px at half size: too small
    assert FaceDetector(min_face=80, max_size=4000).shrink_factor(3000, 4000) == 3


def _imports(module: str) -> set[str]:
    """Modules that fer_runtime/<module>.py imports, by full name (``from fer_runtime import x``
    counts as fer_runtime.x), at any depth of the file (lazy imports inside functions too)."""
    tree = ast.parse((REPO / "fer_runtime" / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_detection_layer_never_imports_the_recognizer():
    # Transitively within fer_runtime: no module the detection layer reaches imports the recognizer.
    todo, seen = ["detector", "pipeline", "frames", "session", "images"], set()
    while todo:
        module = todo.pop()
        seen.add(module)
        imported = _imports(module)
        assert "fer_runtime.recognizer" not in imported and "cv2" not in imported, module
        local = {n.split(".")[1] for n in imported if n.startswith("fer_runtime.") and n.count(".") == 1}
        todo += [m for m in local if m not in seen and (REPO / "fer_runtime" / f"{m}.py").is_file()]
    assert {"bundled", "preprocessing", "errors"} <= seen


def test_shrink_is_area_averaging(rng):
    img = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    for k in (2, 3, 5):
        ours = shrink(img, k)
        ref = cv2.resize(img[: 97 // k * k, : 131 // k * k], (131 // k, 97 // k), interpolation=cv2.INTER_AREA)
        assert ours.shape == ref.shape and np.abs(np.rint(ours) - ref).max() <= 1
    np.testing.assert_array_equal(shrink(img[:, :, 0], 1), img[:, :, 0].astype(np.float32))
    with pytest.raises(ValueError):
        shrink(img, 300)


def test_big_faces_in_shrunk_frames(rng):
    frame = np.kron(_rgb("astronaut.jpg"), np.ones((4, 4, 1), np.uint8))  # 4x enlarged: a ~360 px face
    quick = FaceDetector(min_face=96)  # shrunk 4x
    assert quick.shrink_factor(*frame.shape[:2]) == 4
    found, ref = quick.detect(frame), FaceDetector().detect(_rgb("astronaut.jpg"))
    assert len(found) == 1 and np.abs(np.subtract(found[0].box, np.multiply(ref[0].box, 4))).max() < 8


def test_crop_gray_level_rotated_and_outside(rng):
    gray = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    level = crop_gray(gray, (40.0, 30.0), (20, 10), 0.0, "rgb")
    np.testing.assert_array_equal(level, gray[25:35, 30:50])
    turned = crop_gray(gray, (40.0, 30.0), (10, 20), math.pi / 2, "rgb")  # x axis along the frame's y axis
    np.testing.assert_array_equal(turned, gray[25:35, 30:50].T[::-1])  # out[v, u] = frame[30 + u, 40 - v]
    edge = crop_gray(gray, (0.0, 0.0), (4, 4), 0.0, "rgb")  # half outside: edge pixels repeat
    np.testing.assert_array_equal(edge[:2, :2], np.full((2, 2), gray[0, 0]))
    far = crop_gray(gray, (500.0, 500.0), (3, 3), 0.0, "rgb")
    assert far.shape == (3, 3) and (far == gray[-1, -1]).all()


def test_one_session_builder_for_classifier_and_detector():
    rec = EmotionRecognizer("vgg-taper-int8", threads=1, spinning=True)
    for session in (rec._session, rec.pipeline.detector._session):
        opts = session.get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    default = FaceDetector()._session.get_session_options()
    assert default.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_detector_reports_a_silent_cuda_fallback(monkeypatch, caplog):
    import logging

    import onnxruntime as ort

    from fer_runtime import ProviderError
    from fer_runtime.providers import CPU, CUDA

    real_session = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", lambda data, sess_options=None, providers=None, **kwargs:
                        real_session(data, sess_options=sess_options, providers=[CPU], **kwargs))
    with caplog.at_level(logging.WARNING):
        assert FaceDetector(providers="auto").providers == [CPU]
    assert "fell back" in caplog.text
    with pytest.raises(ProviderError, match="could not apply"):
        FaceDetector(providers=["cuda"])


def test_injected_detector_session():
    import onnxruntime as ort

    session = ort.InferenceSession(bundled_mod.read_bundled_detector(), providers=["CPUExecutionProvider"])
    injected = FaceDetector(session=session)
    frame = _rgb("grace_hopper.jpg")
    assert injected.source == "injected session" and injected.detect(frame) == FaceDetector().detect(frame)


def test_shrink_by_large_factors_and_half_pixel_crops():
    flat = np.full((40, 60), 255, np.uint8)
    assert (shrink(flat, 20) == 255).all()  # 400 x 255 overflows 16-bit sums
    big = np.full((2100, 2100), 180, np.uint8)
    tilted = crop_gray(big, (1050.0, 1050.0), (2000, 2000), 0.2, "rgb")  # box-averaged by 20, then 96 samples a side
    assert tilted.shape == (96, 96) and (tilted == 180).all()
    ramp2d = np.tile(np.arange(200, dtype=np.float32), (200, 1)).astype(np.uint8)
    mid = crop_gray(ramp2d, (100.0, 100.0), (150, 150), 0.01, "rgb")  # 150 px: sampled every 150/96 px
    assert mid.shape == (96, 96) and abs(float(mid[48, 95]) - float(mid[48, 0]) - 150 * 95 / 96) < 1.5
    ramp = np.tile(np.arange(100, dtype=np.uint8), (10, 1))
    level = crop_gray(ramp, (40.5, 5.0), (8, 4), 0.0, "rgb")
    assert level[0].tolist() == list(range(37, 45))  # no duplicated or skipped columns
