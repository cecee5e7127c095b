"""tools/ship_model.py: bundling a checkpoint pins the right bytes and keeps the evidence."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("ship_model", REPO / "tools" / "ship_model.py")
ship_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ship_model)

BUNDLED = '''
        BundledModel(
            name="a",
            filename="a.onnx",
            sha256="{a}",
            description="a",
        ),
        BundledModel(
            name="a-int8",
            filename="a-int8.onnx",
            sha256="{b}",
            description="a, int8",
        ),
'''


def test_repin_changes_only_the_named_entry():
    source = BUNDLED.format(a="1" * 64, b="2" * 64)
    out = ship_model.repin(source, "a-int8.onnx", "f" * 64)
    assert out == BUNDLED.format(a="1" * 64, b="f" * 64)
    with pytest.raises(ship_model.ShipError, match="add it by hand"):
        ship_model.repin(source, "b.onnx", "f" * 64)
    with pytest.raises(ship_model.ShipError, match="exactly one"):
        ship_model.repin(source + source, "a.onnx", "f" * 64)


def _fake_root(tmp_path):
    root = tmp_path / "repo"
    (root / "fer_runtime" / "models").mkdir(parents=True)
    (root / "benchmarks" / "twins").mkdir(parents=True)
    shutil.copy(REPO / "fer_runtime" / "bundled.py", root / "fer_runtime" / "bundled.py")
    run = tmp_path / "runs" / "seed50"
    run.mkdir(parents=True)
    for f in ship_model.EVIDENCE:
        shutil.copy(REPO / "models" / "seed" / f, run / f)
    shutil.copy(REPO / "models" / "seed" / "train.log", tmp_path / "runs" / "seed50.log")
    return root, run


def test_refuses_before_exporting(tmp_path):
    root, run = _fake_root(tmp_path)
    with pytest.raises(ship_model.ShipError, match="filename='nope.onnx'"):
        ship_model.ship(run / "best.pt", "nope", root=root)
    with pytest.raises(ship_model.ShipError, match="lower-case"):
        ship_model.ship(run / "best.pt", "Bad Name", root=root)
    (root / "models" / "seed").mkdir(parents=True)
    with pytest.raises(ship_model.ShipError, match="--replace"):
        ship_model.ship(run / "best.pt", "seed", root=root)
    (run / "curves.png").unlink()
    with pytest.raises(ship_model.ShipError, match="curves.png"):
        ship_model.ship(run / "best.pt", "seed", root=root, replace=True)
    assert ship_model.main([str(run / "best.pt"), "--name", "nope"]) == 1


@pytest.mark.data
@pytest.mark.slow
def test_ship_pins_exports_and_keeps_the_old_model(tmp_path, fer_path):
    from fer_runtime import EmotionRecognizer

    root, run = _fake_root(tmp_path)
    old = root / "models" / "seed"
    old.mkdir(parents=True)
    (old / "marker").write_text("the previous model")
    digests = ship_model.ship(run / "best.pt", "seed", root=root, data=fer_path, replace=True,
                              keep_old=root / "experiments" / "seed-old")
    assert (root / "experiments" / "seed-old" / "marker").read_text() == "the previous model"
    source = (root / "fer_runtime" / "bundled.py").read_text()
    assert set(digests) == {"seed.onnx", "seed-int8.onnx", "seed-fp16.onnx"}
    for filename, digest in digests.items():
        path = root / "fer_runtime" / "models" / filename
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        assert f'filename="{filename}",\n            sha256="{digest}"' in source
        assert EmotionRecognizer(path).info.metadata["arch"] == "seed"
    assert sorted(p.name for p in (root / "models" / "seed").iterdir()) == sorted(
        [*ship_model.EVIDENCE, "train.log", "export_report.json"])
    assert (root / "benchmarks" / "twins" / "seed.pt").resolve() == (root / "models" / "seed" / "best.pt").resolve()
    assert '"path": "fer_runtime/models/seed-int8.onnx"' in (root / "models" / "seed" / "export_report.json").read_text()
