"""Named models, each pinned by sha256 and verified when loaded.

Two registries, both JSON data files (``tools/ship_model.py`` writes the pins, nothing edits this
source for them):

- ``fer_runtime/models/registry.json``: what the wheel carries, the default model, its int8 sibling,
  the fast variant and the face detector. Always available, offline.
- ``models/registry.json`` in a source checkout: the other trained models (their ONNX files in
  ``models/<name>/``), loadable by name with ``models_dir=`` or ``$FER_MODELS_DIR`` (or from the
  package's own source tree, when it runs from one), and by path anywhere. The working directory
  never matters.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
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


MODELS_DIR_ENV = "FER_MODELS_DIR"
SOURCE_TREE = Path(__file__).resolve().parents[1]
"""The folder above this package: a source checkout's root when the package runs from one (or is
installed editable), else site-packages, which has no ``models/registry.json``."""


def checkout_models_dir(models_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder of checkout models (the one holding ``registry.json``): ``models_dir`` when given,
    else ``$FER_MODELS_DIR``, else the ``models/`` of the source tree this package runs from (a
    checkout, or an editable install of one); ``None`` when there is none. Never the working directory."""
    if models_dir is not None:
        return Path(models_dir)
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV])
    own = SOURCE_TREE.joinpath(*CHECKOUT_REGISTRY)
    return own.parent if own.is_file() else None


@functools.lru_cache(maxsize=8)
def _checkout_registry(path: Path, mtime_ns: int) -> dict[str, BundledModel]:
    try:
        return _entries(json.loads(path.read_text(encoding="utf-8")), "models", path.parent)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not a readable model registry ({exc})") from exc


def checkout_models(models_dir: str | os.PathLike[str] | None = None) -> dict[str, BundledModel]:
    """The models of :func:`checkout_models_dir`'s registry ({} when there is none). A folder given
    explicitly (argument or environment) must hold a readable ``registry.json``."""
    folder = checkout_models_dir(models_dir)
    if folder is None:
        return {}
    path = folder / CHECKOUT_REGISTRY[-1]
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ModelError(f"{folder}: no model registry there ({path.name}: {exc.strerror or exc}); models_dir and "
                         f"${MODELS_DIR_ENV} name the folder holding a source checkout's models/registry.json") from exc
    return _checkout_registry(path.resolve(), mtime)


def model_registry(models_dir: str | os.PathLike[str] | None = None) -> dict[str, BundledModel]:
    """Every model that can be named: the wheel's, and the checkout models of :func:`checkout_models`."""
    return {**checkout_models(models_dir), **BUNDLED_MODELS}


@dataclass(frozen=True)
class ModelEntry:
    """One nameable model, as :func:`known_models` lists it."""

    name: str
    precision: str | None  # "fp32", "int8" or "fp16", from the model's metadata
    location: str  # "bundled" (in the wheel) or "checkout" (a source checkout's models/)
    size_bytes: int
    public_test_accuracy: float | None  # single crop, from the model's metadata
    description: str
    default: bool


def known_models(models_dir: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """Every model that can be named here, with its precision, where it lives, its file size and its
    PublicTest accuracy (read from the model's own metadata; each file is sha256-checked on the way).
    Checkout models come from ``models_dir``, ``$FER_MODELS_DIR`` or the package's own source tree."""
    registry = model_registry(models_dir)
    return [_describe(name, entry, registry) for name, entry in sorted(registry.items())]


def _describe(name: str, entry: BundledModel, registry: dict[str, BundledModel]) -> ModelEntry:
    data = _verified(name, registry, "model")
    meta = _metadata(entry.sha256, data)
    accuracy = meta.metrics.get("test_accuracy")
    return ModelEntry(name, meta.precision, "bundled" if entry.root is None else "checkout", len(data),
                      float(accuracy) if isinstance(accuracy, (int, float)) else None, entry.description,
                      name == DEFAULT_MODEL)


_METADATA: dict[str, Any] = {}  # sha256 -> ModelMetadata: each verified file's metadata is read once


def _metadata(sha256: str, data: bytes) -> Any:
    if sha256 not in _METADATA:
        from fer_runtime.metadata import METADATA_KEY, ModelMetadata
        from fer_runtime.session import make_session

        session = make_session(data, sha256[:12], providers=["cpu"], threads=1)
        raw = dict(session.get_modelmeta().custom_metadata_map).get(METADATA_KEY)
        _METADATA[sha256] = ModelMetadata.from_json(raw, sha256[:12])
    return _METADATA[sha256]


def checkout_hint(name: str) -> str:
    """Where a model that is not in the wheel lives in a source checkout, for error messages."""
    base = name.removesuffix("-int8").removesuffix("-fp16")
    suffix = name[len(base):].replace("-", ".")
    return (f"models other than the wheel's live in a source checkout, {name!r} as models/{base}/model{suffix}.onnx: "
            f"pass models_dir='CHECKOUT/models' (or set ${MODELS_DIR_ENV}), or the file's path, e.g. "
            f"EmotionRecognizer('CHECKOUT/models/{base}/model{suffix}.onnx')")


def read_bundled(name: str = DEFAULT_MODEL, models_dir: str | os.PathLike[str] | None = None) -> bytes:
    """The bytes of a named classifier (the wheel's or a checkout's, see :func:`model_registry`), sha256-checked."""
    return _verified(name, model_registry(models_dir), "model")


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
        hint = f"; {checkout_hint(name)}" if kind == "model" and all(e.root is None for e in registry.values()) else ""
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
