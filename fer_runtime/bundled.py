"""Named models, each pinned by sha256 and verified when loaded.

Two registries, both JSON data files (``tools/ship_model.py`` writes the pins, nothing edits this
source for them):

- ``fer_runtime/models/registry.json``: what the wheel carries, the default model, its int8 sibling,
  the fast variant and the face detector. Always available, offline.
- ``models/registry.json`` in a source checkout: the other trained models (their ONNX files in
  ``models/<name>/``), loadable by name inside a checkout and by path anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fer_runtime.errors import ModelError, ModelIntegrityError

CHECKOUT_REGISTRY = ("models", "registry.json")  # under a source checkout's root


@dataclass(frozen=True)
class BundledModel:
    name: str
    filename: str  # relative to the registry's folder: fer_runtime/models/ or, for a checkout model, models/
    sha256: str
    description: str
    root: Path | None = None  # None: package data; else the folder (a checkout's models/) that holds the file


def _entries(doc: dict[str, Any], key: str, root: Path | None) -> dict[str, BundledModel]:
    return {e["name"]: BundledModel(e["name"], e["file"], e["sha256"], e["description"], root) for e in doc[key]}


_WHEEL = json.loads((resources.files("fer_runtime") / "models" / "registry.json").read_text(encoding="utf-8"))
# name -> model; EmotionRecognizer(model=NAME) picks one, no argument picks DEFAULT_MODEL.
BUNDLED_MODELS: dict[str, BundledModel] = _entries(_WHEEL, "models", None)
# The best recipe on validation within the edge budget, refitted on all Training faces (MODEL_CARD.md).
DEFAULT_MODEL: str = _WHEEL["default"]
# Third-party face detectors (origin and license: fer_runtime/models/THIRD_PARTY_NOTICES.md).
BUNDLED_DETECTORS: dict[str, BundledModel] = _entries(_WHEEL, "detectors", None)
DEFAULT_DETECTOR = "yunet"


def checkout_roots() -> list[Path]:
    """Where a source checkout may be: beside this package (running from the checkout or an
    editable install), then the current directory."""
    roots = [Path(__file__).resolve().parents[1], Path.cwd().resolve()]
    return list(dict.fromkeys(roots))


@functools.lru_cache(maxsize=8)
def _checkout_registry(path: Path, mtime_ns: int) -> dict[str, BundledModel]:
    try:
        return _entries(json.loads(path.read_text(encoding="utf-8")), "models", path.parent)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not a readable model registry ({exc})") from exc


def checkout_models() -> dict[str, BundledModel]:
    """The models of the source checkout found first by :func:`checkout_roots` ({} outside one)."""
    for root in checkout_roots():
        path = root.joinpath(*CHECKOUT_REGISTRY)
        if path.is_file():
            return _checkout_registry(path, path.stat().st_mtime_ns)
    return {}


def known_models() -> dict[str, BundledModel]:
    """Every model that can be named here: the wheel's, and inside a source checkout its ``models/``."""
    return {**checkout_models(), **BUNDLED_MODELS}


def checkout_hint(name: str) -> str:
    """Where a model that is not in the wheel lives in a source checkout, for error messages."""
    base = name.removesuffix("-int8").removesuffix("-fp16")
    suffix = name[len(base):].replace("-", ".")
    looked = " and ".join(str(r) for r in checkout_roots())
    return (f"models other than the wheel's are read from a source checkout, {name!r} as "
            f"models/{base}/model{suffix}.onnx (looked for {'/'.join(CHECKOUT_REGISTRY)} under {looked}): "
            f"pass that file's path, e.g. EmotionRecognizer('models/{base}/model{suffix}.onnx')")


def read_bundled(name: str = DEFAULT_MODEL) -> bytes:
    """The bytes of a named classifier (the wheel's or, in a checkout, ``models/``'s), sha256-checked."""
    return _verified(name, known_models(), "model")


def read_bundled_detector(name: str = DEFAULT_DETECTOR) -> bytes:
    """The bytes of a bundled face detector, sha256-checked like the classifiers."""
    return _verified(name, BUNDLED_DETECTORS, "detector")


def model_path(entry: BundledModel) -> Path | None:
    """The file of a checkout model (None for package data, which may live inside a zip)."""
    return None if entry.root is None else entry.root / entry.filename


def _verified(name: str, registry: dict[str, BundledModel], kind: str) -> bytes:
    try:
        entry = registry[name]
    except KeyError:
        hint = f"; {checkout_hint(name)}" if kind == "model" and not checkout_models() else ""
        raise ModelError(f"no bundled {kind} {name!r}; bundled: {', '.join(sorted(registry))}{hint}") from None
    path = model_path(entry)
    ref = resources.files("fer_runtime") / "models" / entry.filename if path is None else path
    what = f"bundled {kind} {name!r}" if path is None else f"{kind} {name!r} ({path})"
    try:
        data = ref.read_bytes()
    except OSError as exc:
        fix = "reinstall fer-edge" if path is None else "restore it from git (git checkout -- models/)"
        raise ModelError(f"{what} is missing ({exc}); {fix}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        fix = "reinstall fer-edge" if entry.root is None else f"it is not the file {entry.root / 'registry.json'} pins"
        raise ModelIntegrityError(
            f"{what} is corrupted: sha256 {digest[:16]}... != recorded {entry.sha256[:16]}...; {fix}"
        )
    return data
