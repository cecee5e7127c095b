"""tools/ship_model.py: bundling a checkpoint pins the right bytes and keeps the evidence."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("ship_model", REPO / "tools" / "ship_model.py")
ship_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ship_model)

REGISTRY = {"models": [{"name": "a", "file": "a.onnx", "sha256": "1" * 64, "description": "a"},
                       {"name": "a-int8", "file": "a-int8.onnx", "sha256": "2" * 64, "description": "a, int8"}]}


def test_repin_changes_only_the_named_entry():
    out = ship_model.repin(REGISTRY, "a-int8", "f" * 64)
    assert [e["sha256"] for e in out["models"]] == ["1" * 64, "f" * 64]
    assert REGISTRY["models"][1]["sha256"] == "2" * 64  # a copy: the input is untouched
    with pytest.raises(ship_model.ShipError, match="add it by hand"):
        ship_model.repin(REGISTRY, "b", "f" * 64)
    with pytest.raises(ship_model.ShipError, match="exactly one"):
        ship_model.repin({"models": REGISTRY["models"] * 2}, "a", "f" * 64)


def _fake_root(tmp_path):
    root = tmp_path / "repo"
    (root / "fer_runtime" / "models").mkdir(parents=True)
    (root / "models").mkdir()
    for rel in ("fer_runtime/models/registry.json", "models/registry.json"):
        shutil.copy(REPO / rel, root / rel)
    run = tmp_path / "runs" / "seed50"
    run.mkdir(parents=True)
    for f in ship_model.EVIDENCE:
        shutil.copy(REPO / "models" / "seed" / f, run / f)
    shutil.copy(REPO / "models" / "seed" / "train.log", tmp_path / "runs" / "seed50.log")
    return root, run


def _pins(root, rel):
    return {e["name"]: e for e in json.loads((root / rel).read_text())["models"]}


def _snapshot(root):
    return {p.relative_to(root): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _fake_export(calls):
    """Stands in for fer_export.export_onnx: three small files and a report, no data needed."""
    from fer_export.onnx_export import ExportReport, ParityReport, VariantReport

    def export(checkpoint, output, **kwargs):
        calls.append(checkpoint)
        for suffix in ("", ".int8", ".fp16"):
            output.with_name(f"{output.stem}{suffix}.onnx").write_bytes(f"onnx{suffix}".encode())
        parity = ParityReport(1000, 1e-6, 1.0, [], (1, 64), 1e-4)
        variants = [VariantReport(str(output.with_name(f"{output.stem}.{p}.onnx")), p, 5, 0.6, 0.6, 0.99, 3589)
                    for p in ("int8", "fp16")]
        return ExportReport(str(output), 4, 1.0, 18, parity, variants)

    return export


def test_refuses_before_exporting(tmp_path, monkeypatch):
    import fer_export

    calls = []
    monkeypatch.setattr(fer_export, "export_onnx", _fake_export(calls))
    root, run = _fake_root(tmp_path)
    (root / "models" / "seed").mkdir(parents=True)
    before = _snapshot(root)
    refusals = {
        "entry named 'nope'": dict(name="nope"),
        "lower-case": dict(name="Bad Name"),
        "--replace": dict(name="seed"),
        "there is no": dict(name="vgg-small", keep_old=tmp_path / "old"),
        "exists already": dict(name="seed", replace=True, keep_old=run),
        "is a seed checkpoint, not vgg-small": dict(name="vgg-small"),
    }
    for message, kwargs in refusals.items():
        with pytest.raises(ship_model.ShipError, match=message):
            ship_model.ship(run / "best.pt", root=root, **kwargs)
    shutil.copy(run / "best.pt", run / "last.pt")
    with pytest.raises(ship_model.ShipError, match="best.pt"):
        ship_model.ship(run / "last.pt", "seed", root=root, replace=True)
    (root / "models" / ".seed.new").mkdir()
    with pytest.raises(ship_model.ShipError, match="interrupted"):
        ship_model.ship(run / "best.pt", "seed", root=root, replace=True)
    (root / "models" / ".seed.new").rmdir()
    (run / "curves.png").unlink()
    with pytest.raises(ship_model.ShipError, match="curves.png"):
        ship_model.ship(run / "best.pt", "seed", root=root, replace=True)
    assert ship_model.main([str(run / "best.pt"), "--name", "nope", "--root", str(root)]) == 1
    assert calls == [] and _snapshot(root) == before


def test_ship_switches_over_only_when_everything_is_staged(tmp_path, monkeypatch):
    import fer_export

    calls = []
    monkeypatch.setattr(fer_export, "export_onnx", _fake_export(calls))
    root, run = _fake_root(tmp_path)
    dotted = run.rename(run.with_name("lr0.05"))  # the default log is runs/lr0.05.log, not runs/lr0.log
    (dotted.parent / "seed50.log").rename(dotted.parent / "lr0.05.log")
    before = _snapshot(root)
    monkeypatch.setattr(ship_model, "repin", lambda *a: (_ for _ in ()).throw(OSError("disk full")) if a[2] else a[0])
    assert ship_model.main([str(dotted / "best.pt"), "--name", "seed", "--root", str(root)]) == 1
    assert _snapshot(root) == before  # the failed staging left nothing behind
    monkeypatch.undo()
    monkeypatch.setattr(fer_export, "export_onnx", _fake_export(calls))
    assert ship_model.main([str(dotted / "best.pt"), "--name", "seed", "--root", str(root)]) == 0
    pins = _pins(root, "models/registry.json")
    for name, file, content in (("seed", "model.onnx", b"onnx"), ("seed-int8", "model.int8.onnx", b"onnx.int8"),
                                ("seed-fp16", "model.fp16.onnx", b"onnx.fp16")):
        assert (root / "models" / "seed" / file).read_bytes() == content  # a checkout model: in models/NAME
        assert pins[name]["file"] == f"seed/{file}" and pins[name]["sha256"] == hashlib.sha256(content).hexdigest()
    assert (root / "models" / "seed" / "train.log").read_bytes() == (dotted.parent / "lr0.05.log").read_bytes()
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no staging leftovers
    assert _pins(root, "fer_runtime/models/registry.json") == _pins(REPO, "fer_runtime/models/registry.json")
    assert not list((root / "fer_runtime" / "models").glob("*.onnx"))

    # A wheel model: its fp32 and int8 go into the package with their pins, its fp16 stays in models/.
    (root / "models" / "vgg-deep").mkdir()
    (root / "models" / "vgg-deep" / "marker").write_text("the previous model")
    (root / "models" / "vgg-deep" / "best.pt").write_text("the previous checkpoint")
    keep = tmp_path / "experiments" / "vgg-deep-old"
    assert ship_model.main([str(dotted / "best.pt"), "--name", "vgg-deep", "--other-arch", "--root", str(root),
                            "--keep-old", str(keep)]) == 0
    wheel = _pins(root, "fer_runtime/models/registry.json")
    assert wheel["vgg-deep"]["sha256"] == hashlib.sha256(b"onnx").hexdigest()
    assert (root / "fer_runtime" / "models" / "vgg-deep-int8.onnx").read_bytes() == b"onnx.int8"
    assert wheel["vgg-taper-int8"] == _pins(REPO, "fer_runtime/models/registry.json")["vgg-taper-int8"]
    assert (root / "models" / "vgg-deep" / "model.fp16.onnx").read_bytes() == b"onnx.fp16"
    assert _pins(root, "models/registry.json")["vgg-deep-fp16"]["sha256"] == hashlib.sha256(b"onnx.fp16").hexdigest()
    assert sorted(p.name for p in keep.iterdir()) == ["marker"]  # no checkpoint copied into experiments
    report = json.loads((root / "models" / "vgg-deep" / "export_report.json").read_text())
    assert report["path"] == "fer_runtime/models/vgg-deep.onnx"
    assert ship_model.main([str(dotted / "best.pt"), "--name", "seed", "--root", str(root), "--replace"]) == 0
    assert len(calls) == 4


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
    pins = _pins(root, "models/registry.json")
    assert set(digests) == {"seed", "seed-int8", "seed-fp16"}
    for name, digest in digests.items():
        path = root / "models" / pins[name]["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest == pins[name]["sha256"]
        assert EmotionRecognizer(path).info.metadata.arch == "seed"
    assert sorted(p.name for p in (root / "models" / "seed").iterdir()) == sorted(
        [*ship_model.EVIDENCE, "train.log", "export_report.json", "model.onnx", "model.int8.onnx", "model.fp16.onnx"])
    assert '"path": "models/seed/model.int8.onnx"' in (root / "models" / "seed" / "export_report.json").read_text()
