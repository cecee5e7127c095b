"""Portable models (fer-export --portable): the crop and frame graphs against the Python runtime, their
.ort twins, the same graphs in onnxruntime-web (WASM) and onnxruntime-node, and the torch-free export."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from fer_export.portable import (
    CROP_CHECKS,
    FRAME_CHECKS,
    build,
    convert_to_ort,
    crop_parity,
    frame_parity,
    output_diffs,
    read_sources,
    reference_faces,
    synthetic_crops,
    within,
)
from fer_runtime import EmotionRecognizer, __version__, preprocess
from fer_runtime.detector import FaceDetector
from fer_runtime.portable import PORTABLE_KEY, PortableCropModel, PortableFrameModel

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "tests" / "data" / "photos"
NODE_DIR = REPO / "tests" / "node"
MODELS = {"int8": "vgg-taper-int8", "fp32": "vgg-deep"}  # the fast variant and the default model


def photo(name: str) -> np.ndarray:
    with Image.open(PHOTOS / name) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def portable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """The crop and frame models of the two test classifiers, built once (no parity run here)."""
    out = tmp_path_factory.mktemp("portable")
    paths: dict[str, dict[str, Path]] = {}
    for precision, name in MODELS.items():
        models = build(*read_sources(name))
        paths[precision] = {}
        for kind, model in models.items():
            path = out / precision / f"{name}.{kind}.onnx"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(model.SerializeToString())
            paths[precision][kind] = path
    return paths


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(threads=1, max_pixels=None)


def recognizer(precision: str) -> EmotionRecognizer:
    return EmotionRecognizer(MODELS[precision], threads=1, precision="named")  # the file exported


def face_crops(detector: FaceDetector, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """RGB crops of the faces in the test photos: the detector's box, scaled and shifted at random."""
    crops = []
    for name in ("astronaut.jpg", "grace_hopper.jpg", "cameraman.jpg"):
        image = photo(name)
        (x, y, w, h), = [d.box for d in detector.detect(image)]
        for _ in range(count // 3 + 1):
            s, dx, dy = rng.uniform(0.6, 1.6), rng.uniform(-0.2, 0.2) * w, rng.uniform(-0.2, 0.2) * h
            x0, y0 = int(max(0, x + dx - (s - 1) * w / 2)), int(max(0, y + dy - (s - 1) * h / 2))
            crops.append(image[y0: y0 + max(1, int(s * h)), x0: x0 + max(1, int(s * w))].copy())
    return crops[:count]


def test_crop_preprocessing_bit_exact_on_500_crops(portable, detector) -> None:
    rng = np.random.default_rng(28)
    crops = synthetic_crops(rng, 470) + face_crops(detector, rng, 36)
    sizes = {c.shape[:2] for c in crops}
    assert len(crops) >= 500 and (1, 1) in sizes and (400, 400) in sizes
    report = crop_parity(PortableCropModel(portable["int8"]["crop"], threads=1), recognizer("int8"), crops)
    print(report.line())  # the measured figures docs/PORTABLE.md quotes (pytest -s)
    assert report.preprocessing_identical == report.crops, report.line()
    assert report.worst_probability_diff <= 1e-5, report.line()


def test_crop_model_fp32_and_batches(portable, detector) -> None:
    rng = np.random.default_rng(7)
    rec, model = recognizer("fp32"), PortableCropModel(portable["fp32"]["crop"], threads=1)
    report = crop_parity(model, rec, synthetic_crops(rng, 40) + face_crops(detector, rng, 12))
    assert report.passed, report.line()
    batch = rng.integers(0, 256, (5, 61, 37, 3), dtype=np.uint8)  # a batch shares one H, W
    out = model.run(batch)
    assert np.array_equal(out["preprocessed"], preprocess(list(batch), rec.info.preprocess))
    assert np.abs(out["probabilities"] - rec.predict_proba(list(batch))).max() <= 1e-5
    assert out["label"].dtype == np.int64 and out["label"].tolist() == out["probabilities"].argmax(1).tolist()
    # BGR users reverse the channels; grey users repeat the level three times
    grey = rng.integers(0, 256, (1, 50, 40), dtype=np.uint8)
    assert np.array_equal(model.run(np.repeat(grey[..., None], 3, axis=3))["preprocessed"],
                          preprocess(grey[0], rec.info.preprocess))
    assert np.array_equal(model.run(np.ascontiguousarray(batch[..., ::-1]))["preprocessed"],
                          preprocess(list(batch), rec.info.preprocess, color_order="bgr"))


def parity_scenes() -> list[np.ndarray]:
    """The test photos (as they are, mirrored, rolled), an 8-face 1280x720 frame composed as BENCHMARKS.md
    composes them (also rolled by 15 degrees and enlarged past the 1920 px working limit), random frames."""
    from fer_bench.scenes import multi_face_frame, photo_faces

    frames = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = photo(path.name)
        frames += [image, image[:, ::-1].copy()]
        frames += [np.asarray(Image.fromarray(image).rotate(a, Image.BILINEAR, expand=True)) for a in (12, -25)]
    eight, _ = multi_face_frame(photo_faces(FaceDetector(threads=1)), [40, 60, 80, 100, 120, 150, 180, 220],
                                np.random.default_rng(1))
    frames += [eight, np.asarray(Image.fromarray(eight).rotate(15, Image.BILINEAR)),
               np.asarray(Image.fromarray(eight).resize((2600, 1462), Image.BILINEAR))]
    rng = np.random.default_rng(3)
    frames += [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((1, 1, 3), (480, 640, 3), (31, 2500, 3))]
    return frames


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_frame_model_matches_the_pipeline(portable, detector, precision: str) -> None:
    frames = parity_scenes()
    report = frame_parity(PortableFrameModel(portable[precision]["frame"], threads=1), recognizer(precision),
                          detector, frames)
    print(f"{MODELS[precision]}: {report.line()}")
    assert report.faces >= 30, report.line()  # the 8-face frames and the photos' faces
    assert report.count_mismatches == 0 and report.worst_box_diff <= 1.0, report.line()
    assert report.label_agreement >= 0.99 and report.worst_probability_diff <= 0.01, report.line()
    # Same YuNet outputs give identical crops (all of them on the development machine, docs/PORTABLE.md); a CPU
    # whose kernels sum YuNet's convolutions differently in the two sessions may move a pixel by one level.
    assert report.crops_identical >= 0.9 * report.faces, report.line()


def test_metadata_names_the_sources(portable) -> None:
    for precision, name in MODELS.items():
        source = read_sources(name)[0]
        for kind, path in portable[precision].items():
            meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[PORTABLE_KEY])
            assert meta["kind"] == kind and meta["package_version"] == __version__
            assert meta["labels"] == list(recognizer(precision).labels)
            assert meta["source"]["sha256"] == hashlib.sha256(source.data).hexdigest()
            assert set(meta["outputs"]) >= ({"probabilities", "label", "logits"} if kind == "crop" else
                                            {"boxes", "scores", "landmarks", "probabilities", "labels"})
        frame_meta = PortableFrameModel(portable[precision]["frame"]).metadata
        assert frame_meta["settings"]["score_threshold"] == 0.6 and frame_meta["detector"]["name"] == "yunet"


def test_ort_twins_equal_their_onnx_files(portable, tmp_path: Path) -> None:
    for kind in ("crop", "frame"):
        shutil.copy(portable["int8"][kind], tmp_path)
    written = convert_to_ort(tmp_path)
    names = {p.name for p in written}
    assert {"vgg-taper-int8.crop.ort", "vgg-taper-int8.frame.ort", "required_operators.config"} <= names
    config = (tmp_path / "required_operators.config").read_text()
    assert "NonMaxSuppression" in config and "Loop" in config and str(tmp_path) not in config
    rng = np.random.default_rng(5)
    crops = [c[None] for c in synthetic_crops(rng, 12)]
    stem = tmp_path / "vgg-taper-int8"
    pairs = [(PortableCropModel(f"{stem}.crop.onnx"), PortableCropModel(f"{stem}.crop.ort"), crops, CROP_CHECKS),
             (PortableFrameModel(f"{stem}.frame.onnx"), PortableFrameModel(f"{stem}.frame.ort"),
              parity_scenes()[:8], FRAME_CHECKS)]
    for onnx_model, ort_model, inputs, checks in pairs:
        diffs = output_diffs(((onnx_model.run(x), ort_model.run(x)) for x in inputs), checks)
        assert within(diffs, checks), diffs


# --- the same graphs outside Python -----------------------------------------------------------------

def save(folder: Path, name: str, array: np.ndarray) -> dict[str, object]:
    array = np.ascontiguousarray(array)
    (folder / f"{name}.bin").write_bytes(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return {"file": f"{name}.bin", "dtype": array.dtype.name, "shape": list(array.shape)}


def write_goldens(folder: Path, portable: dict[str, Path], detector: FaceDetector) -> None:
    """Inputs and the Python runtime's outputs (NumPy path, not the graphs) for the Node test."""
    rec = recognizer("int8")
    rng = np.random.default_rng(11)
    manifest: dict[str, object] = {"models": {}, "crop_checks": CROP_CHECKS,
                                   "frame_checks": {**FRAME_CHECKS, "label_agreement": 0.99}}
    for kind, path in portable.items():
        shutil.copy(path, folder / path.name)
        manifest["models"][kind] = path.name  # type: ignore[index]
    crops = [c[None] for c in synthetic_crops(rng, 10)] + [c[None] for c in face_crops(detector, rng, 3)]
    crops.append(rng.integers(0, 256, (3, 70, 90, 3), dtype=np.uint8))
    manifest["crops"] = [
        {"name": f"crop{i}", "input": save(folder, f"crop{i}", c),
         "preprocessed": save(folder, f"crop{i}_x", preprocess(list(c), rec.info.preprocess)),
         "probabilities": save(folder, f"crop{i}_p", rec.predict_proba(list(c)))}
        for i, c in enumerate(crops)]
    scenes = parity_scenes()
    frames = [photo("astronaut.jpg"), photo("grace_hopper.jpg"), scenes[-6], scenes[-5], scenes[-2]]
    entries = []
    for i, frame in enumerate(frames):
        ref = reference_faces(frame, rec, detector)
        entries.append({"name": f"frame{i}", "faces": len(ref.boxes), "input": save(folder, f"frame{i}", frame),
                        **{k: save(folder, f"frame{i}_{k}", getattr(ref, k))
                           for k in ("boxes", "scores", "landmarks", "probabilities", "crops")},
                        "labels": save(folder, f"frame{i}_labels", ref.probabilities.argmax(1).astype(np.int64))})
    manifest["frames"] = entries
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_node_runs_the_portable_models(portable, detector, tmp_path: Path) -> None:
    """onnxruntime-web (WASM) and onnxruntime-node in Node against the Python runtime's goldens. Node is
    part of CI: a missing node or npm fails this test rather than skipping it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed (Node 20+): the portable models are checked in onnxruntime-web/-node")
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
    if not (NODE_DIR / "node_modules" / "onnxruntime-web").is_dir():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, env=env, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    write_goldens(tmp_path, portable["int8"], detector)
    done = subprocess.run([node, "--test"], cwd=NODE_DIR, env={**env, "FER_GOLDEN_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "# fail 0" in done.stdout and "# pass 6" in done.stdout, done.stdout[-2000:]
    print("\n".join(line for line in done.stdout.splitlines() if line.lstrip().startswith("# ")))  # measured diffs


def test_the_javascript_in_the_docs_is_the_tested_example() -> None:
    example = (NODE_DIR / "example.mjs").read_text()
    assert example.strip() in (REPO / "docs" / "PORTABLE.md").read_text()


# --- the command, without torch and without onnx ----------------------------------------------------

# What a base install (numpy + onnxruntime) lacks, besides onnx.
NOT_IN_BASE = ("torch", "typer", "PIL", "tqdm", "matplotlib", "onnxscript", "pandas", "cv2", "ray")


def run_fer_export(args: list[str], *blocked: str) -> subprocess.CompletedProcess[str]:
    """fer-export's entry point in a fresh interpreter where importing any of ``blocked`` fails, as on
    an install without those packages."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); sys.argv = ['fer-export', *{args!r}]\n"
            "from fer_runtime.extras import fer_export; fer_export()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=False)


def test_export_portable_needs_only_the_base_install_and_onnx(tmp_path: Path) -> None:
    done = run_fer_export(["--portable", "vgg-taper-int8", "-o", str(tmp_path), "--crops", "8"], *NOT_IN_BASE)
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["required_operators.config", "vgg-taper-int8.crop.onnx", "vgg-taper-int8.crop.ort",
                     "vgg-taper-int8.frame.onnx", "vgg-taper-int8.frame.ort"]
    assert "crops preprocessed bit for bit" in done.stdout and ".ort twin" in done.stdout
    onnx.checker.check_model(str(tmp_path / "vgg-taper-int8.frame.onnx"), full_check=True)


def test_export_portable_without_onnx_names_the_extra(tmp_path: Path) -> None:
    done = run_fer_export(["--portable", "vgg-taper-int8", "-o", str(tmp_path)], "onnx", *NOT_IN_BASE)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: fer-export --portable needs onnx: pip install 'fer-edge[portable]'"
    assert not any(tmp_path.iterdir())


def test_export_portable_unknown_model_is_one_line(tmp_path: Path) -> None:
    done = run_fer_export(["--portable", "no-such-model", "-o", str(tmp_path)], *NOT_IN_BASE)
    assert done.returncode == 1 and done.stderr.startswith("error: no-such-model: no such model file")
    assert len(done.stderr.strip().splitlines()) == 1
