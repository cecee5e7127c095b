"""Hostile files: decompression bombs, model files that are not ours, names that try to leave the
models folder, symlink loops. Timings and peaks are measured by ``python -m fer_bench.reliability
bombs``; here each is refused, and a bomb's refusal is checked not to spend the memory it asks for.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fer_bench.checkout import checkout_path
from fer_bench.reliability import BOMB_PROBE, small_photo, jpeg_declaring, png_bomb, png_declaring
from fer_runtime import EmotionRecognizer, InputError, ModelError, load_image
from fer_runtime.scale import expand

BOMBS = {
    "png declaring 9000x9000": lambda: png_declaring(9000, 9000),
    "png declaring 100000x100000": lambda: png_declaring(100_000, 100_000),
    "jpeg declaring 9000x9000": lambda: jpeg_declaring(9000, 9000),
    "jpeg declaring 65500x65500": lambda: jpeg_declaring(65_500, 65_500),
    "png holding 9000x9000 zero pixels": lambda: png_bomb(9000, 9000),
}


def load_photo_bytes() -> bytes:
    return (checkout_path("tests/data/photos") / "grace_hopper.jpg").read_bytes()


@pytest.mark.parametrize("name", BOMBS)
def test_decompression_bombs_are_refused_before_their_pixels_are_allocated(name, tmp_path):
    data = BOMBS[name]()
    assert len(data) < 200_000  # small files...
    with pytest.raises(InputError, match="pixels is over the limit|decompression bomb"):
        load_image(data)
    path = tmp_path / "bomb.bin"
    path.write_bytes(data)
    done = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(path), str(small_photo())], capture_output=True,
                          text=True, check=True)
    _ms, before_mb, peak_mb, outcome = done.stdout.split(" ", 3)
    assert outcome.startswith("InputError")
    assert float(peak_mb) - float(before_mb) < 50  # ...that would need 81 MB to 30 GB decoded


def test_the_jpeg_bomb_is_a_real_jpeg_that_decodes_when_its_size_is_honest():
    from PIL import Image

    assert Image.open(io.BytesIO(jpeg_declaring(9000, 9000))).size == (9000, 9000)
    assert load_image(jpeg_declaring(16, 16)).shape == (16, 16, 3)


def _graph_model(nodes, inputs, outputs, inits=(), domains=()) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "hostile", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 17), *domains])
    model.ir_version = 8
    return model


def _io(width: int = 7):
    return ([helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", width])])


def _linear(weight: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    return _graph_model(nodes, *_io(weight.shape[1]), inits=[numpy_helper.from_array(weight, "w")])


def test_onnx_models_that_are_not_ours_are_refused(tmp_path):
    custom_op = _graph_model([helper.make_node("Backdoor", ["input"], ["logits"], domain="com.example.evil")], *_io(),
                             domains=[helper.make_opsetid("com.example.evil", 1)])
    external = _linear(np.zeros((2304, 7), np.float32))
    tensor = external.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../../../etc/passwd"  # weights read from elsewhere on disk
    cases = {"custom_op.onnx": (custom_op, "not a valid ONNX model|cannot|Backdoor"),
             "external.onnx": (external, "not a valid ONNX model|external|cannot"),
             "eight_labels.onnx": (_linear(np.zeros((2304, 8), np.float32)), "N x 7")}
    for name, (model, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(model.SerializeToString())
        with pytest.raises(ModelError, match=message):
            EmotionRecognizer(path)


def test_weights_altered_to_nan_fail_at_the_first_prediction_not_with_garbage(tmp_path):
    path = tmp_path / "nan.onnx"
    path.write_bytes(_linear(np.full((2304, 7), np.nan, np.float32)).SerializeToString())
    rec = EmotionRecognizer(path)  # a file by path carries no recorded hash: only its outputs can be checked
    with pytest.raises(ModelError, match="non-finite logits"):
        rec.predict_proba(np.zeros((48, 48), np.uint8))


@pytest.mark.parametrize("name", ["../vgg-deep.onnx", "vgg-deep/../../../etc/passwd", "/etc/passwd",
                                  "models/../../vgg-deep", "vgg-deep\x00.onnx", "~/vgg-deep"])
def test_names_that_leave_the_models_folder_are_never_read_as_bundled(name):
    with pytest.raises(ModelError, match="no such model file|not a valid ONNX model") as info:
        EmotionRecognizer(name)
    assert not str(info.value).startswith("bundled:")  # read (or not found) as the path it is


def test_predict_cli_refuses_a_system_file_as_a_model_in_one_line(tmp_path):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(load_photo_bytes())
    done = subprocess.run([sys.executable, "-m", "fer_runtime", str(photo), "--model", "/etc/passwd"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "not a valid ONNX model" in done.stderr


def test_symlink_loops_dangling_links_and_self_links_end_and_name_every_file_once(tmp_path):
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "face.jpg").write_bytes(load_photo_bytes())
    (root / "top.jpg").write_bytes(load_photo_bytes())
    (root / "a" / "b" / "up").symlink_to(root, target_is_directory=True)  # a loop through two levels
    (root / "self.jpg").symlink_to(root / "self.jpg")  # a link to itself (ELOOP when opened)
    (root / "gone.png").symlink_to(tmp_path / "missing.png")
    done = subprocess.run([sys.executable, "-m", "fer_runtime", str(root), "--csv"], capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    by_file = {}
    for row in rows:
        by_file.setdefault(str(Path(row["source"]).relative_to(root)), []).append(row)
    assert set(by_file) == {"top.jpg", "a/b/face.jpg", "self.jpg", "gone.png"}
    assert all(row["error"] for name in ("self.jpg", "gone.png") for row in by_file[name])
    assert len(by_file["top.jpg"]) == len(by_file["a/b/face.jpg"]) == 1 and not by_file["top.jpg"][0]["error"]
    # fer-batch finds the same inputs by the same rules (the broken links become error rows there too)
    assert sorted(p for p, _ in expand([str(root)])) == sorted(str(root / name) for name in by_file)
