"""Ship a trained checkpoint as a bundled model: the maintainer's side of ``fer_runtime.bundled``.

    python tools/ship_model.py runs/vgg-medium-kd/best.pt --name vgg-medium

does, in order, and stops at the first failure with nothing half-written in the package:

1. checks that ``fer_runtime/bundled.py`` already has entries for NAME, NAME-int8 and NAME-fp16
   (descriptions are written by a person; this tool only pins the bytes);
2. exports the checkpoint with ``fer-export`` (fp32, int8, fp16; parity and int8 agreement checked);
3. copies the three ONNX files into ``fer_runtime/models/`` and rewrites their sha256 pins;
4. copies the run's evidence (checkpoint, metrics, plots, log, export report) to ``models/NAME/``
   and links ``benchmarks/twins/NAME.pt`` to the checkpoint, so ``fer-bench --model NAME`` finds it.

An existing ``models/NAME/`` is replaced only with ``--replace``; ``--keep-old DIR`` moves it to DIR
first (a model that taught the new one must stay reproducible). It prints the ``fer-bench``
commands to run next: their figures belong in MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"": "", "-int8": ".int8", "-fp16": ".fp16"}  # bundled suffix -> fer-export suffix
EVIDENCE = ["best.pt", "confusion_test.png", "confusion_val.png", "curves.png", "final_metrics.json",
            "metrics.csv", "metrics.json"]


class ShipError(RuntimeError):
    pass


def repin(source: str, filename: str, digest: str) -> str:
    """``bundled.py``'s text with the sha256 of the entry for ``filename`` replaced by ``digest``."""
    pattern = re.compile(r'(filename="' + re.escape(filename) + r'",\s*sha256=")([0-9a-f]{64})(")')
    if len(pattern.findall(source)) != 1:
        raise ShipError(f"fer_runtime/bundled.py needs exactly one BundledModel with filename={filename!r} "
                        "(name, filename, sha256, description in that order); add it by hand first")
    return pattern.sub(lambda m: m.group(1) + digest + m.group(3), source)


def ship(checkpoint: Path, name: str, *, root: Path = ROOT, log: Path | None = None, data: Path | None = None,
         replace: bool = False, keep_old: Path | None = None) -> dict[str, str]:
    """Export ``checkpoint`` and bundle it as ``name`` under ``root``; returns filename -> sha256."""
    from fer_export import export_onnx
    from fer_train.data import file_sha256

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ShipError(f"model name {name!r}: use lower-case letters, digits and dashes")
    if not checkpoint.is_file():
        raise ShipError(f"{checkpoint}: no such checkpoint")
    run_dir = checkpoint.parent
    missing = [f for f in EVIDENCE if not (run_dir / f).is_file()]
    if missing:
        raise ShipError(f"{run_dir} lacks {', '.join(missing)}: ship a finished fer-train run")
    log = log if log is not None else run_dir.with_suffix(".log")
    if not log.is_file():
        raise ShipError(f"{log}: no training log (pass --log)")
    bundled_py = root / "fer_runtime" / "bundled.py"
    source = bundled_py.read_text()
    for suffix in VARIANTS:  # fail before the slow export when an entry is missing
        source = repin(source, f"{name}{suffix}.onnx", "0" * 64)
    target = root / "models" / name
    if target.exists() and not replace:
        raise ShipError(f"{target} exists: pass --replace (and --keep-old DIR if it taught the new model)")
    if keep_old is not None and keep_old.exists():
        raise ShipError(f"{keep_old} exists already")

    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"{name}.onnx"
        report = export_onnx(checkpoint, staged, data=data, int8=True, fp16=True)  # raises ExportError on any failed check
        print(report.summary().replace(tmp + "/", ""))
        bundled_dir = Path("fer_runtime") / "models"  # the report names the files where they will live
        report.path = str(bundled_dir / f"{name}.onnx")
        for v in report.variants:
            v.path = str(bundled_dir / f"{name}-{v.precision}.onnx")
        (Path(tmp) / "export_report.json").write_text(json.dumps(report.to_dict(), indent=1))
        digests = {}
        source = bundled_py.read_text()
        for suffix, export_suffix in VARIANTS.items():
            produced = Path(tmp) / f"{name}{export_suffix}.onnx"
            filename = f"{name}{suffix}.onnx"
            digests[filename] = file_sha256(produced)
            source = repin(source, filename, digests[filename])
        # Past this point only copies and renames remain.
        for suffix, export_suffix in VARIANTS.items():
            shutil.copyfile(Path(tmp) / f"{name}{export_suffix}.onnx", root / "fer_runtime" / "models" / f"{name}{suffix}.onnx")
        bundled_py.write_text(source)
        if target.exists():
            if keep_old is not None:
                keep_old.parent.mkdir(parents=True, exist_ok=True)
                target.rename(keep_old)
            else:
                shutil.rmtree(target)
        target.mkdir(parents=True)
        for f in EVIDENCE:
            shutil.copy2(run_dir / f, target / f)
        shutil.copy2(log, target / "train.log")
        shutil.copy2(Path(tmp) / "export_report.json", target / "export_report.json")
    twin = root / "benchmarks" / "twins" / f"{name}.pt"
    if not twin.is_symlink():
        twin.symlink_to(os.path.relpath(target / "best.pt", twin.parent))
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("checkpoint", type=Path, help="best.pt of a finished fer-train run")
    parser.add_argument("--name", required=True, help="bundled model name (entries must exist in fer_runtime/bundled.py)")
    parser.add_argument("--log", type=Path, help="the run's training log (default: <run dir>.log)")
    parser.add_argument("--data", type=Path, help="FER2013 source for the export checks (default: fer-export's)")
    parser.add_argument("--replace", action="store_true", help="replace an existing models/NAME")
    parser.add_argument("--keep-old", type=Path, help="move the replaced models/NAME here first (e.g. experiments/X)")
    args = parser.parse_args(argv)
    try:
        digests = ship(args.checkpoint, args.name, log=args.log, data=args.data, replace=args.replace or args.keep_old is not None,
                       keep_old=args.keep_old)
    except Exception as exc:  # ShipError, ExportError, OSError: the reason, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for filename, digest in digests.items():
        print(f"{filename}  {digest}")
    print(f"\nbundled as {args.name!r}. Next, and put the figures in MODEL_CARD.md:\n"
          f"  fer-bench accuracy --model {args.name} --no-progress -o benchmarks/results/{args.name}-accuracy\n"
          f"  fer-bench --model {args.name} --no-progress -o benchmarks/results/{args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
