"""Measure the training code's shape, at a git revision or in the working tree.

Two figures, both read with ``ast`` (nothing is imported or run):

- the length in lines of ``train/engine.py`` and of its longest functions (methods included, nested
  functions counted inside their parent);
- the places in train/, export/, benchmarks/, fer_runtime/ and tools/ that read a checkpoint or
  ONNX-metadata key by string: ``x["arch"]`` or ``x.get("metrics")`` where the string is one of the
  top-level keys of a checkpoint or of the model metadata (KEYS below). It is a heuristic: a history
  row's ``row["epoch"]`` counts too; the same rule is applied to both sides of a comparison.

    python tools/measure_code.py                     # the working tree
    python tools/measure_code.py --before ac7d3f6    # a Markdown table: that revision vs the working tree
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "train/engine.py"
FOLDERS = ("train", "export", "benchmarks", "fer_runtime", "tools")
# Checkpoint keys (train/checkpoint.py) and ONNX metadata keys (export/onnx_export.py).
KEYS = frozenset({
    "format", "format_version", "arch", "arch_args", "state_dict", "labels", "preprocess", "train_config", "epoch",
    "metrics", "data", "num_parameters", "teacher", "init_from", "torch_version", "temperature", "swa_state_dict",
    "swa_n", "optimizer", "scheduler", "scaler", "history", "best_val_acc", "best_epoch",
    "training_data", "package_version", "checkpoint_sha256", "checkpoint_epoch", "opset", "exporter", "precision",
})


def _read(rev: str | None, path: str) -> str:
    if rev is None:
        return (ROOT / path).read_text()
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def _python_files(rev: str | None) -> list[str]:
    if rev is None:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard",
                                 *FOLDERS], check=True, capture_output=True, text=True).stdout.split()
        return [p for p in listed if p.endswith(".py") and (ROOT / p).exists()]
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, *FOLDERS], check=True,
                            capture_output=True, text=True).stdout.split()
    return [p for p in listed if p.endswith(".py")]


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every top-level function and method (decorators excluded)."""
    lengths = {}
    for node in ast.parse(source).body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        for fn in members:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{node.name}.{fn.name}" if isinstance(node, ast.ClassDef) else fn.name
                lengths[name] = fn.end_lineno - fn.lineno + 1
    return lengths


def key_reads(source: str) -> int:
    """``x["key"]`` (read, not written) and ``x.get("key", ...)`` with ``key`` in KEYS."""
    count = 0
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                and isinstance(node.slice, ast.Constant) and node.slice.value in KEYS):
            count += 1
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in KEYS):
            count += 1
    return count


def measure(rev: str | None, top: int = 6) -> dict[str, object]:
    engine = _read(rev, ENGINE)
    lengths = function_lengths(engine)
    reads = Counter()
    for path in _python_files(rev):
        reads[path.split("/")[0]] += key_reads(_read(rev, path))
    return {"engine_lines": len(engine.splitlines()), "longest": sorted(lengths.items(), key=lambda kv: -kv[1])[:top],
            "train_lines": lengths.get("train", 0), "reads": reads}


def _table(before: dict[str, object], after: dict[str, object], rev: str) -> str:
    rows = [("`train/engine.py` lines", before["engine_lines"], after["engine_lines"]),
            ("`train()` lines", before["train_lines"], after["train_lines"])]
    for i in range(max(len(before["longest"]), len(after["longest"]))):
        b = before["longest"][i] if i < len(before["longest"]) else ("", "")
        a = after["longest"][i] if i < len(after["longest"]) else ("", "")
        rows.append((f"longest function #{i + 1}", f"`{b[0]}` {b[1]}", f"`{a[0]}` {a[1]}"))
    for folder in FOLDERS:
        rows.append((f"string key reads in `{folder}/`", before["reads"][folder], after["reads"][folder]))
    rows.append(("string key reads, all five", sum(before["reads"].values()), sum(after["reads"].values())))
    lines = [f"| measure | before ({rev}) | after (working tree) |", "|---|---|---|"]
    lines += [f"| {name} | {b} | {a} |" for name, b, a in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to compare the working tree with")
    args = parser.parse_args()
    after = measure(None)
    if args.before:
        print(_table(measure(args.before), after, args.before))
        return
    print(f"train/engine.py: {after['engine_lines']} lines; longest functions:")
    for name, n in after["longest"]:
        print(f"  {n:4d}  {name}")
    print("string key reads:", dict(after["reads"]), "total", sum(after["reads"].values()))


if __name__ == "__main__":
    main()
