"""Ship a trained checkpoint as a named model: the maintainer's side of ``fer_runtime.bundled``.

    python tools/ship_model.py runs/vgg-medium-kd/best.pt --name vgg-medium

1. checks, before anything slow: the checkpoint is a finished run's best.pt with its metrics,
   plots and log (default log: runs/RUN.log beside runs/RUN/); one of the two registries has an
   entry for each of NAME, NAME-int8 and NAME-fp16 (written by a person, with a description and
   any placeholder sha256 such as "": this tool only pins the bytes): fer_runtime/models/registry.json
   for what the wheel carries, models/registry.json for models kept in the source checkout; the
   checkpoint's architecture is NAME (or --other-arch); models/NAME is replaced only with --replace;
2. exports fp32, int8 and fp16 with fer-export's checks (parity, int8 agreement);
3. stages each ONNX file where its registry entry says (fer_runtime/models/FILE, or models/FILE,
   e.g. models/NAME/model.int8.onnx), the new sha256 pins (JSON) and models/NAME (checkpoint,
   metrics, plots, log, export report), then switches them in with renames. fer-bench finds the
   PyTorch twin at models/NAME/best.pt.

A failure before the switch-over (everything slow, every check) leaves the checkout as it was; the
switch-over itself is a handful of renames. --keep-old DIR moves the replaced models/NAME's
metrics, plots and logs to DIR (relative to the current directory, like the other paths), without
its checkpoint and ONNX files: experiments/ keep no checkpoints (the replaced one stays in git
history, docs/TRAINING.md). It prints the fer-bench commands to run next; their figures belong in
MODEL_CARD.md.
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
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"": "", "-int8": ".int8", "-fp16": ".fp16"}  # model-name suffix -> fer-export suffix
EVIDENCE = ["best.pt", "confusion_test.png", "confusion_val.png", "curves.png", "final_metrics.json",
            "metrics.csv", "metrics.json"]
NOT_KEPT = ("*.pt", "*.onnx")  # what --keep-old leaves out: checkpoints and models stay out of experiments/


class ShipError(RuntimeError):
    pass


class Registry(NamedTuple):
    """One registry file: its path, its folder (where its ``file`` entries live) and its parsed JSON."""

    path: Path
    doc: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def text(self) -> str:
        return json.dumps(self.doc, indent=1) + "\n"


def repin(doc: dict[str, Any], name: str, digest: str) -> dict[str, Any]:
    """A copy of a registry's JSON with the sha256 of model ``name`` set to ``digest``.

    A new entry may carry any placeholder (``"sha256": ""``): only the name has to match.
    """
    entries = [e for e in doc.get("models", []) if e.get("name") == name]
    if len(entries) != 1:
        raise ShipError(f"the registry needs exactly one model entry named {name!r} "
                        "(name, file, sha256, description); add it by hand first")
    return {**doc, "models": [{**e, "sha256": digest} if e.get("name") == name else e for e in doc["models"]]}


class Layout(NamedTuple):
    """Where shipping ``name`` reads and writes, under a checkout's root."""

    registries: tuple[Path, Path]  # the wheel's, the checkout's
    target: Path  # models/NAME
    staged: Path  # models/.NAME.new, built before the switch-over
    old: Path  # models/.NAME.old, the replaced models/NAME until the end

    @classmethod
    def of(cls, root: Path, name: str) -> Layout:
        models = root / "models"
        return cls((root / "fer_runtime" / "models" / "registry.json", models / "registry.json"),
                   models / name, models / f".{name}.new", models / f".{name}.old")


def _load_registries(paths: Layout, root: Path) -> list[Registry]:
    registries = []
    for path in paths.registries:
        try:
            registries.append(Registry(path, json.loads(path.read_text(encoding="utf-8"))))
        except FileNotFoundError:
            raise ShipError(f"{root} is not a fer-edge checkout (no {path.relative_to(root)})") from None
        except ValueError as exc:
            raise ShipError(f"{path}: not valid JSON ({exc})") from exc
    return registries


def _registry_of(registries: list[Registry], model: str) -> Registry:
    """The one registry with an entry for ``model``."""
    holders = [r for r in registries if any(e.get("name") == model for e in r.doc.get("models", []))]
    if len(holders) != 1:
        where = " and ".join(str(r.path) for r in (holders or registries))
        raise ShipError(f"{where}: exactly one registry needs an entry named {model!r} "
                        "(name, file, sha256, description); add it by hand first")
    repin(holders[0].doc, model, "")  # also refuses two entries of one name
    return holders[0]


def _destination(registry: Registry, model: str) -> Path:
    entry = next(e for e in registry.doc["models"] if e["name"] == model)
    return registry.folder / entry["file"]


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
    registries = _load_registries(paths, root)
    for suffix in VARIANTS:
        _registry_of(registries, name + suffix)
    target = paths.target
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
                        f"(and check the descriptions in the registry)")
    return log


def ship(checkpoint: Path, name: str, *, root: Path = ROOT, log: Path | None = None, data: Path | None = None,
         replace: bool = False, keep_old: Path | None = None, other_arch: bool = False) -> dict[str, str]:
    """Export ``checkpoint`` and ship it as ``name`` under ``root``; returns model name -> sha256.

    All checks run before the export, and the export and the new ``models/NAME`` are built in
    staging places; the checkout is then switched over with renames only.
    """
    from fer_export import export_onnx
    from fer_train.data import file_sha256

    log = _check(checkpoint, name, root, log, replace, keep_old, other_arch)
    paths = Layout.of(root, name)
    target, staged_models, old = paths.target, paths.staged, paths.old
    registries = _load_registries(paths, root)
    staged_files: list[tuple[Path, Path]] = []  # (staging path, final path), outside models/NAME
    with tempfile.TemporaryDirectory() as tmp:
        try:
            # export_onnx raises ExportError on any failed check
            report = export_onnx(checkpoint, Path(tmp) / f"{name}.onnx", data=data, int8=True, fp16=True)
            print(report.summary().replace(tmp + "/", ""))
            finals = {suffix: _destination(_registry_of(registries, name + suffix), name + suffix) for suffix in VARIANTS}
            # the report names the files where they will live
            report.path = finals[""].relative_to(root).as_posix()
            for v in report.variants:
                v.path = finals[f"-{v.precision}"].relative_to(root).as_posix()
            staged_models.mkdir(parents=True)
            for f in EVIDENCE:  # best.pt included: _check made sure the checkpoint is the run's best.pt
                shutil.copy2(checkpoint.parent / f, staged_models / f)
            shutil.copy2(log, staged_models / "train.log")
            (staged_models / "export_report.json").write_text(json.dumps(report.to_dict(), indent=1))
            digests = {}
            docs = {r.path: r for r in registries}
            for suffix, export_suffix in VARIANTS.items():
                model, final = name + suffix, finals[suffix]
                if final.is_relative_to(target):  # inside models/NAME: built in its staged copy
                    staging = staged_models / final.relative_to(target)
                    staging.parent.mkdir(parents=True, exist_ok=True)
                else:
                    staging = final.with_name(f".{final.name}.tmp")
                    staged_files.append((staging, final))
                shutil.copyfile(Path(tmp) / f"{name}{export_suffix}.onnx", staging)
                digests[model] = file_sha256(staging)
                registry = _registry_of(list(docs.values()), model)
                docs[registry.path] = registry._replace(doc=repin(registry.doc, model, digests[model]))
            for registry in docs.values():
                staging = registry.path.with_name(f".{registry.path.name}.tmp")
                staging.write_text(registry.text(), encoding="utf-8")
                staged_files.append((staging, registry.path))
        except BaseException:
            shutil.rmtree(staged_models, ignore_errors=True)
            for staging, _ in staged_files:
                staging.unlink(missing_ok=True)
            raise
    try:  # the switch-over: renames only; the old models/NAME is set aside, not deleted, until the end
        if target.exists():
            target.rename(old)
        staged_models.rename(target)
        for staging, final in staged_files:
            os.replace(staging, final)
    except OSError as exc:
        raise ShipError(f"switching to the new files failed part-way: {exc}. Compare models/{name}, {old.name}, "
                        f"{staged_models.name} and the .tmp files beside the registries with git status") from exc
    if old.exists():
        if keep_old is not None:
            keep_old.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(old, keep_old, ignore=shutil.ignore_patterns(*NOT_KEPT))
            print(f"kept {old.name}'s metrics, plots and logs in {keep_old} (no checkpoint, no ONNX: they stay in git history)")
        shutil.rmtree(old)
    return digests


def main(argv: list[str] | None = None) -> int:
    from fer_export import ExportError

    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="best.pt of a finished fer-train run")
    parser.add_argument("--name", required=True, help="model name (its entries must exist in a registry)")
    parser.add_argument("--log", type=Path, help="the run's training log (default: runs/RUN.log for runs/RUN/best.pt)")
    parser.add_argument("--data", type=Path, help="FER2013 source for the export checks (default: fer-export's)")
    parser.add_argument("--replace", action="store_true", help="replace an existing models/NAME")
    parser.add_argument("--keep-old", type=Path, help="move the replaced models/NAME here, without checkpoint and ONNX (e.g. experiments/X)")
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
    for model, digest in digests.items():
        print(f"{model}  {digest}")
    print(f"\nshipped as {args.name!r}. Next, and put the figures in MODEL_CARD.md:\n"
          f"  fer-bench accuracy --model {args.name} --no-progress -o benchmarks/results/{args.name}-accuracy\n"
          f"  fer-bench latency --model {args.name} --batch-sizes 1,256 --no-progress"
          f" -o benchmarks/results/{args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
