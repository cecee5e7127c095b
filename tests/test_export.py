"""fer-export: validation, metadata, variants and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fer_runtime import EmotionRecognizer, preprocess
from fer_train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from fer_train.models import ARCHITECTURES, build_model

from conftest import SEED_CHECKPOINT

pytestmark = pytest.mark.data


def _export(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_export", *args], capture_output=True, text=True, timeout=600)


def test_report_and_metadata(exported_seed):
    report = exported_seed["report"]
    assert report.parity.faces == 1000 and report.parity.passed
    assert report.parity.max_abs_diff <= 1e-4 and report.parity.argmax_agreement == 1.0
    assert report.parity.batch_sizes == (1, 64)
    model = onnx.load(str(exported_seed["fp32"]))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["fer_edge"])
    ckpt = load_checkpoint(SEED_CHECKPOINT)
    assert meta["labels"] == ckpt["labels"] and meta["arch"] == "seed" and meta["arch_args"] == ckpt["arch_args"]
    assert meta["num_parameters"] == 685_223 and meta["precision"] == "fp32"
    assert meta["preprocess"] == ckpt["preprocess"] and meta["training_data"]["sha256"] == ckpt["data"]["sha256"]
    assert meta["metrics"]["test_accuracy"] == ckpt["metrics"]["test"]["accuracy"]
    assert len(meta["checkpoint_sha256"]) == 64 and meta["package_version"]
    assert model.opset_import[0].version >= 17
    inp, out = model.graph.input[0], model.graph.output[0]
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.shape.dim[0].dim_param and out.type.tensor_type.shape.dim[0].dim_param
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [1, 48, 48]


def test_parity_on_fixed_real_faces_fp32_and_int8(exported_seed, fer_data):
    faces = fer_data.split("PublicTest").images[:1000]
    ckpt = load_checkpoint(SEED_CHECKPOINT)
    x = preprocess(faces)
    with torch.no_grad():
        ref = model_from_checkpoint(ckpt)(torch.from_numpy(x)).numpy()
    fp32 = EmotionRecognizer(exported_seed["fp32"], providers="cpu")
    np.testing.assert_allclose(fp32.logits(x), ref, atol=1e-4, rtol=0)
    assert (fp32.logits(x[:1]) - ref[:1]).max() <= 1e-4  # batch 1 through the dynamic axis
    int8 = EmotionRecognizer(exported_seed["int8"], providers="cpu")
    assert (int8.logits(x).argmax(1) == ref.argmax(1)).mean() >= 0.98
    fp16 = EmotionRecognizer(exported_seed["fp16"], providers="cpu")
    assert (fp16.logits(x).argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_variants_are_reported_and_tagged(exported_seed):
    variants = {v.precision: v for v in exported_seed["report"].variants}
    assert variants["int8"].argmax_agreement >= 0.98 and variants["int8"].faces == 3589
    assert abs(variants["int8"].test_accuracy - variants["int8"].fp32_test_accuracy) < 0.02
    assert variants["int8"].size_bytes < exported_seed["fp32"].stat().st_size
    for precision in ("int8", "fp16"):
        rec = EmotionRecognizer(exported_seed[precision])
        assert rec.info.metadata.precision == precision


def _assert_clean_failure(done: subprocess.CompletedProcess, folder: Path, message: str) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not list(folder.glob("*.onnx")) and not list(folder.glob(".*")), list(folder.iterdir())


def test_bad_inputs_fail_in_one_line_and_leave_nothing(tmp_path, fer_path):
    out = tmp_path / "out"
    out.mkdir()
    target = ["-o", str(out / "m.onnx"), "--data", str(fer_path)]
    _assert_clean_failure(_export([str(tmp_path / "missing.pt"), *target]), out, "no such checkpoint")
    data = SEED_CHECKPOINT.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 3])
    _assert_clean_failure(_export([str(tmp_path / "truncated.pt"), *target]), out, "not a readable checkpoint")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    _assert_clean_failure(_export([str(tmp_path / "notes.pt"), *target]), out, "not a readable checkpoint")
    ckpt = load_checkpoint(SEED_CHECKPOINT)
    save_checkpoint(tmp_path / "arch.pt", {**ckpt, "arch": "vit-huge"})
    _assert_clean_failure(_export([str(tmp_path / "arch.pt"), *target]), out, "unknown architecture 'vit-huge'")
    nan = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    nan["0.weight"][0, 0, 0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", {**ckpt, "state_dict": nan})
    _assert_clean_failure(_export([str(tmp_path / "nan.pt"), *target]), out, "NaN or inf")
    _assert_clean_failure(_export([str(SEED_CHECKPOINT), "-o", str(tmp_path / "nowhere" / "m.onnx"), "--data", str(fer_path)]),
                          out, "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path below a regular file instead
            blocker = tmp_path / "blocker"
            blocker.write_text("")
            done = _export([str(SEED_CHECKPOINT), "-o", str(blocker / "m.onnx"), "--data", str(fer_path)])
        else:
            done = _export([str(SEED_CHECKPOINT), "-o", str(locked / "m.onnx"), "--data", str(fer_path)])
        _assert_clean_failure(done, out, "")
    finally:
        locked.chmod(0o700)


def test_parity_failure_is_reported_and_nothing_is_kept(tmp_path, fer_path, monkeypatch):
    from fer_export import ExportError, onnx_export

    real = onnx_export._torch_logits
    monkeypatch.setattr(onnx_export, "_torch_logits", lambda model, x: real(model, x) + 1e-3)
    with pytest.raises(ExportError, match="parity check failed on 1000 faces"):
        onnx_export.export_onnx(SEED_CHECKPOINT, tmp_path / "m.onnx", data=fer_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_help_and_success_output(tmp_path, fer_path):
    done = _export(["--help"])
    assert done.returncode == 0 and "--int8" in done.stdout and "parity" in done.stdout
    done = _export([str(SEED_CHECKPOINT), "-o", str(tmp_path / "m.onnx"), "--data", str(fer_path), "--json", str(tmp_path / "r.json")])
    assert done.returncode == 0, done.stderr
    assert "max |logit diff|" in done.stdout and "argmax agreement 100.00%" in done.stdout
    assert json.loads((tmp_path / "r.json").read_text())["parity"]["faces"] == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "r.json"]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_registered_architecture_exports_with_parity(arch, tmp_path, fer_data):
    """Each architecture of the registry, untrained, goes through fer-export's graph steps (dynamic
    batch axis, onnx.checker) and matches PyTorch on real faces at batch 1 and 64. Its BatchNorm
    statistics are randomised first, so a wrongly folded normalisation cannot hide behind the
    identity statistics of a fresh model."""
    import inspect

    from fer_export.onnx_export import _check_onnx, _session, check_parity, export_onnx, to_onnx
    from fer_train.models import for_inference

    limit = inspect.signature(export_onnx).parameters["tolerance"].default  # fer-export's own limit

    torch.manual_seed(0)
    model = build_model(arch).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)  # the convs have no bias of their own: a lost shift would show
    path = tmp_path / f"{arch}.onnx"
    to_onnx(for_inference(model), 48, path)  # as fer-export writes it: RepConv branches folded
    _check_onnx(path)
    session = _session(path)
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, dynamic batch axis, not the dummy's 2
    x = preprocess(fer_data.split("PublicTest").images[:96])
    report = check_parity(model, session, x, limit)
    assert report.passed, (report.max_abs_diff, report.mismatched_faces)
    assert session.run(None, {session.get_inputs()[0].name: x[:3]})[0].shape == (3, 7)


def test_int8_keeps_the_full_resolution_stage_and_the_logits_in_float(tmp_path):
    """The first conv, its ReLU and its pool stay float (one QuantizeLinear on a quarter of the
    pixels), and so does the last linear layer; everything between is quantized."""
    import onnx

    from fer_export.onnx_export import _float_nodes, quantize_int8, to_onnx
    from fer_train.models import for_inference

    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    to_onnx(for_inference(build_model("rep-fast")), 48, fp32)
    nodes = onnx.load(str(fp32)).graph.node
    kept = _float_nodes(nodes)
    assert [n.op_type for n in nodes if n.name in kept] == ["Conv", "Relu", "MaxPool", "Gemm"]
    quantize_int8(fp32, int8, np.random.default_rng(0).normal(size=(4, 1, 48, 48)).astype(np.float32))
    graph = onnx.load(str(int8)).graph
    producer = {o: n for n in graph.node for o in n.output}
    first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producer)
    assert producer[first_q.input[0]].op_type == "MaxPool"  # quantized after the first pool, not before it
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert convs[0].input[0] == "input" and all(c.input[0] in dequantized for c in convs[1:])
