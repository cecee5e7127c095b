"""Does a refactor of the training code change what it trains? Train the same two small recipes with
fer_train at a git revision and with the working tree, then compare every file they write.

    python experiments/same_checkpoints.py --before ac7d3f6 [--data PATH]

Recipe a: seed, 1,200 faces, 3 epochs. Recipe b: 2 epochs of --train-on-val from a's best.pt with SWA
from epoch 1, mixup and sqrt class weights. best.pt and last.pt must hold the same keys in the same
order and bit-equal tensors; metrics.json and final_metrics.json the same figures. Timings differ, and
so do the sha256 of files fer-train wrote (torch.save bytes vary: a serialization id and pickle's
sharing of strings), so b's records of a's file hash are not compared. About 2 minutes a side here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_seconds", "images_per_second"}

RECIPES = """
import logging, sys
from pathlib import Path
from fer_train.engine import TrainConfig, train
logging.basicConfig(level=logging.WARNING)
root, data = Path(sys.argv[1]), sys.argv[2] or None
base = dict(data=data, limit=1200, batch_size=64, progress=False)
train(TrainConfig(out_dir=str(root / "a"), epochs=3, **base))
train(TrainConfig(out_dir=str(root / "b"), epochs=2, init_from=str(root / "a" / "best.pt"), train_on_val=True,
                  swa_start=1, mixup=0.2, class_weights="sqrt", **base))
"""


def _train(source: Path | None, out: Path, data: str) -> None:
    """Run RECIPES with fer_train from ``source`` (a folder holding fer_train/) or the installed one.
    Every side writes to the same ``out`` in turn, so recorded paths are equal."""
    env = {**os.environ, "PYTHONPATH": str(source)} if source else dict(os.environ)
    subprocess.run([sys.executable, "-c", RECIPES, str(out), data], check=True, env=env, cwd=tempfile.gettempdir())


def _same(a: object, b: object, where: str) -> None:
    import torch

    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            file_hash = str(k).endswith("sha256") and where.endswith(("init_from", "calibration"))
            if k not in TIMING and not file_hash:
                _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def compare(before: Path, after: Path) -> None:
    import torch

    for run in ("a", "b"):
        for name in ("best.pt", "last.pt"):
            _same(torch.load(before / run / name, weights_only=True), torch.load(after / run / name, weights_only=True),
                  f"{run}/{name}")
        for name in ("metrics.json", "final_metrics.json"):
            _same(json.loads((before / run / name).read_text()), json.loads((after / run / name).read_text()),
                  f"{run}/{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the code to compare with")
    parser.add_argument("--data", default=os.environ.get("FER2013_PATH", ""), help="FER2013 (default: $FER2013_PATH)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "train"], check=True,
                                 capture_output=True).stdout
        (tmp / "src.tar").write_bytes(archive)
        with tarfile.open(tmp / "src.tar") as tar:
            tar.extractall(tmp / "src", filter="data")
        (tmp / "src" / "fer_train").symlink_to(tmp / "src" / "train")  # the import name of train/
        out = tmp / "run"
        _train(tmp / "src", out, args.data)
        out.rename(tmp / "before")
        _train(None, out, args.data)
        compare(tmp / "before", out)
    print(f"same checkpoints and metrics: {args.before} and the working tree (recipes a and b)")


if __name__ == "__main__":
    main()
