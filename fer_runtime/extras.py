"""Optional features and the extras that provide them: one check, one message, exit code 2.

The command-line tools of the other packages (``fer-train``, ``fer-eval``, ``fer-export``,
``fer-bench``) start here: their packages import typer and torch at import time, so on a base
install the check has to run before them to be a one-line message rather than a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

from fer_runtime.errors import MissingExtraError

# script -> (extra, modules it imports, entry point)
TOOLS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "fer-train": ("train", ("typer", "torch", "tqdm", "matplotlib"), "fer_train.cli:train_main"),
    "fer-eval": ("train", ("typer", "torch", "tqdm", "matplotlib"), "fer_train.cli:eval_main"),
    "fer-export": ("train", ("typer", "torch", "onnx", "onnxscript"), "fer_export.cli:main"),
    "fer-bench": ("train", ("typer", "torch", "onnx", "tqdm", "matplotlib", "PIL"), "fer_bench.cli:run"),
    # The portable models start from the shipped .onnx files: the runtime and onnx, no torch.
    "fer-export --portable": ("portable", ("onnx",), "fer_export.portable_cli:main"),
}


def require(tool: str, modules: Sequence[str], extra: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` when any of ``modules`` is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"{tool} needs {', '.join(missing)}: pip install 'fer-edge[{extra}]'")


def run_reporting_missing_extras(main: Callable[[], object]) -> None:
    """Run ``main``; a missing extra (raised before or while it runs) is one line on stderr, exit code 2."""
    try:
        main()
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _launch(script: str) -> None:
    extra, modules, target = TOOLS[script]

    def start() -> None:
        require(script, modules, extra)
        module, _, attr = target.partition(":")
        getattr(importlib.import_module(module), attr)()

    run_reporting_missing_extras(start)


def fer_train() -> None:
    _launch("fer-train")


def fer_eval() -> None:
    _launch("fer-eval")


def wants_portable(argv: Sequence[str]) -> bool:
    return any(arg == "--portable" or arg.startswith("--portable=") for arg in argv)


def fer_export() -> None:
    _launch("fer-export --portable" if wants_portable(sys.argv[1:]) else "fer-export")


def fer_bench() -> None:
    _launch("fer-bench")
