"""Ship a trained checkpoint as a bundled model: the maintainer's side of ``fer_runtime.bundled``.

    python tools/ship_model.py runs/vgg-medium-kd/best.pt --name vgg-medium

1. checks, before anything slow: the checkpoint is a finished run's best.pt with its metrics,
   plots and log (default log: runs/RUN.log beside runs/RUN/); fer_runtime/bundled.py has entries
   for NAME, NAME-int8 and NAME-fp16 (written by a person, any placeholder sha256 such as "":
   this tool only pins the bytes); the checkpoint's architecture is NAME (or --other-arch);
   models/NAME is replaced only with --replace;
2. exports fp32, int8 and fp16 with fer-export's checks (parity, int8 agreement);
3. stages the three ONNX files, the new sha256 pins and models/NAME (checkpoint, metrics, plots,
   log, export report), then switches them in with renames and links benchmarks/twins/NAME.pt to
   the checkpoint, so `fer-bench --model NAME` finds its PyTorch twin.

A failure before the switch-over (everything slow, every check) leaves the checkout as it was; the
switch-over itself is a handful of renames. --keep-old DIR moves the replaced models/NAME to DIR
(relative to the current directory, like the other paths): a model that taught the new one must
stay reproducible. It prints the fer-bench commands to run next; their
figures belong in MODEL_CARD.md.
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
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"": "", "-int8": ".int8", "-fp16": ".fp16"}  # bundled suffix -> fer-export suffix
EVIDENCE = ["best.pt", "confusion_test.png", "confusion_val.png", "curves.png", "final_metrics.json",
            "metrics.csv", "metrics.json"]


class ShipError(RuntimeError):
    pass


def repin(source: str, filename: str, digest: str) -> str:
    """``bundled.py``'s text with the sha256 of the entry for ``filename`` replaced by ``digest``.

    A new entry may carry any placeholder (``sha256=""``): only the filename has to match.
    """
    pattern = re.compile(r'(filename="' + re.escape(filename) + r'",\s*sha256=")([^"]*)(")')
    if len(pattern.findall(source)) != 1:
        raise ShipError(f"fer_runtime/bundled.py needs exactly one BundledModel with filename={filename!r} "
                        "(name, filename, sha256, description in that order); add it by hand first")
    return pattern.sub(lambda m: m.group(1) + digest + m.group(3), source)


class Layout(NamedTuple):
    """Where bundling ``name`` reads and writes, under a checkout's root."""

    bundled_py: Path
    package_dir: Path
    twin: Path
    target: Path  # models/NAME
    staged: Path  # models/.NAME.new, built before the switch-over
    old: Path  # models/.NAME.old, the replaced models/NAME until the end

    @classmethod
    def of(cls, root: Path, name: str) -> Layout:
        models = root / "models"
        return cls(root / "fer_runtime" / "bundled.py", root / "fer_runtime" / "models",
                   root / "benchmarks" / "twins" / f"{name}.pt", models / name, models / f".{name}.new",
                   models / f".{name}.old")


def _check(checkpoint: Path, name: str, root: Path, log: Path | None, replace: bool,
           keep_old: Path | None, other_arch: bool) -> Path:
    """Every refusal that needs no export; returns the log to ship. Writes nothing."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ShipError(f"model name {name!r}: use lower-case letters, digits and dashes")
    if not checkpoint.is_file():
        raise ShipError(f"{checkpoint}: no such checkpoint")
    if checkpoint.name != "best.pt":
        raise ShipError(f"{checkpoint}: ship a run's best.pt (its metrics, plots and calibration describe that file)")
    run_dir = checkpoint.parent
    missing = [f for f in EVIDENCE if not (run_dir / f).is_file()]
    if missing:
        raise ShipError(f"{run_dir} lacks {', '.join(missing)}: ship a finished fer-train run")
    log = log if log is not None else run_dir.parent / f"{run_dir.name}.log"
    if not log.is_file():
        raise ShipError(f"{log}: no training log (pass --log)")
    paths = Layout.of(root, name)
    source = paths.bundled_py.read_text(encoding="utf-8")
    for suffix in VARIANTS:
        repin(source, f"{name}{suffix}.onnx", "")
    if not paths.package_dir.is_dir() or not paths.twin.parent.is_dir():
        raise ShipError(f"{root} is not a fer-edge checkout (no fer_runtime/models or benchmarks/twins)")
    twin, target = paths.twin, paths.target
    if twin.exists() and not twin.is_symlink():
        raise ShipError(f"{twin} is a file, not a link to models/{name}/best.pt: move it away first")
    if target.exists() and not replace:
        raise ShipError(f"{target} exists: pass --replace (and --keep-old DIR if it taught the new model)")
    if keep_old is not None:
        if not target.exists():
            raise ShipError(f"--keep-old: there is no {target} to keep")
        if keep_old.exists():
            raise ShipError(f"--keep-old: {keep_old} exists already")
        if keep_old.resolve().is_relative_to(target.resolve()):
            raise ShipError(f"--keep-old: {keep_old} is inside {target}, which is replaced")
    for leftover in (paths.staged, paths.old):
        if leftover.exists():
            raise ShipError(f"{leftover} is left from an interrupted ship: look at it, then remove it")
    from fer_train.checkpoint import load_checkpoint

    arch = load_checkpoint(checkpoint).get("arch")
    if arch != name and not other_arch:
        raise ShipError(f"{checkpoint} is a {arch} checkpoint, not {name}: pass --other-arch if that is meant "
                        f"(and check the descriptions in bundled.py)")
    return log


def ship(checkpoint: Path, name: str, *, root: Path = ROOT, log: Path | None = None, data: Path | None = None,
         replace: bool = False, keep_old: Path | None = None, other_arch: bool = False) -> dict[str, str]:
    """Export ``checkpoint`` and bundle it as ``name`` under ``root``; returns filename -> sha256.

    All checks run before the export, and the export and the new ``models/NAME`` are built in
    staging places; the package is then switched over with renames only.
    """
    from fer_export import export_onnx
    from fer_train.data import file_sha256

    log = _check(checkpoint, name, root, log, replace, keep_old, other_arch)
    bundled_py, package_dir, twin, target, staged_models, old = Layout.of(root, name)
    staged_files: list[tuple[Path, Path]] = []  # (staging path, final path)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            # export_onnx raises ExportError on any failed check
            report = export_onnx(checkpoint, Path(tmp) / f"{name}.onnx", data=data, int8=True, fp16=True)
            print(report.summary().replace(tmp + "/", ""))
            report.path = f"fer_runtime/models/{name}.onnx"  # the report names the files where they will live
            for v in report.variants:
                v.path = f"fer_runtime/models/{name}-{v.precision}.onnx"
            staged_models.mkdir(parents=True)
            for f in EVIDENCE:  # best.pt included: _check made sure the checkpoint is the run's best.pt
                shutil.copy2(checkpoint.parent / f, staged_models / f)
            shutil.copy2(log, staged_models / "train.log")
            (staged_models / "export_report.json").write_text(json.dumps(report.to_dict(), indent=1))
            digests = {}
            source = bundled_py.read_text(encoding="utf-8")
            for suffix, export_suffix in VARIANTS.items():
                filename = f"{name}{suffix}.onnx"
                staging = package_dir / f".{filename}.tmp"
                shutil.copyfile(Path(tmp) / f"{name}{export_suffix}.onnx", staging)
                staged_files.append((staging, package_dir / filename))
                digests[filename] = file_sha256(staging)
                source = repin(source, filename, digests[filename])
            staging = bundled_py.with_name(".bundled.py.tmp")
            staging.write_text(source, encoding="utf-8")
            staged_files.append((staging, bundled_py))
        except BaseException:
            shutil.rmtree(staged_models, ignore_errors=True)
            for staging, _ in staged_files:
                staging.unlink(missing_ok=True)
            raise
    try:  # the switch-over: renames only; the old models/NAME is set aside, not deleted, until the end
        if target.exists():
            target.rename(old)
        staged_models.rename(target)
        link = twin.with_name(f".{twin.name}.tmp")
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(target / "best.pt", twin.parent))
        os.replace(link, twin)
        for staging, final in staged_files:
            os.replace(staging, final)
    except OSError as exc:
        raise ShipError(f"switching to the new files failed part-way: {exc}. Compare models/{name}, {old.name}, "
                        f"{staged_models.name} and the .tmp files in fer_runtime/ with git status") from exc
    if old.exists():
        if keep_old is not None:
            keep_old.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(old, keep_old)
        else:
            shutil.rmtree(old)
    return digests


def main(argv: list[str] | None = None) -> int:
    from fer_export import ExportError

    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="best.pt of a finished fer-train run")
    parser.add_argument("--name", required=True, help="bundled model name (its entries must exist in bundled.py)")
    parser.add_argument("--log", type=Path, help="the run's training log (default: runs/RUN.log for runs/RUN/best.pt)")
    parser.add_argument("--data", type=Path, help="FER2013 source for the export checks (default: fer-export's)")
    parser.add_argument("--replace", action="store_true", help="replace an existing models/NAME")
    parser.add_argument("--keep-old", type=Path, help="move the replaced models/NAME here first (e.g. experiments/X)")
    parser.add_argument("--other-arch", action="store_true",
                        help="ship a checkpoint whose architecture differs from NAME")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # tests ship into a scratch copy
    args = parser.parse_args(argv)
    try:
        digests = ship(args.checkpoint, args.name, root=args.root, log=args.log, data=args.data,
                       replace=args.replace or args.keep_old is not None, keep_old=args.keep_old,
                       other_arch=args.other_arch)
    except (ShipError, ExportError, OSError) as exc:  # the reason, not a traceback; bugs still raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for filename, digest in digests.items():
        print(f"{filename}  {digest}")
    print(f"\nbundled as {args.name!r}. Next, and put the figures in MODEL_CARD.md:\n"
          f"  fer-bench accuracy --model {args.name} --no-progress -o benchmarks/results/{args.name}-accuracy\n"
          f"  fer-bench latency --model {args.name} --batch-sizes 1,256 --no-progress"
          f" -o benchmarks/results/{args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
