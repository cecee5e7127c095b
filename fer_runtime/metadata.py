"""ModelMetadata: what a fer-edge ONNX file says about itself, versioned and checked.

``fer-export`` writes it (``to_json``) into the model's ``metadata_props`` under ``METADATA_KEY``;
the recognizer, ``fer-bench`` and the tools read it back (``from_json``). Reading never trusts the
file: every field the runtime uses is type- and range-checked, and anything wrong, including
JSON that is too deep, too large or has numbers too long to parse, is a :class:`MetadataError`
naming the model and the field. Fields the runtime does not use are kept, unchecked, in ``extra``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from fer_runtime.errors import ModelError
from fer_runtime.labels import LABELS
from fer_runtime.preprocessing import PreprocessConfig

METADATA_KEY = "fer_edge"  # metadata_props key holding the model's JSON description
FORMAT = "fer-edge-onnx"
SCHEMA_VERSION = 1  # bump when a field changes meaning; readers refuse versions newer than theirs
MAX_JSON_CHARS = 1_000_000  # real metadata is ~2 KB; anything near this is not ours
MAX_LABELS = 1000
SIZE_RANGE = (8, 1024)  # preprocess.size a model may ask for
MEAN_LIMIT, STD_RANGE = 1e3, (1e-6, 1e3)  # pixels are 0..1 before normalising; far outside is not a model of ours


class MetadataError(ModelError):
    """A model's metadata is malformed, from a newer schema, or not fer-edge's."""


@dataclass(frozen=True)
class ModelMetadata:
    """The typed contract between export (writer) and the runtime, benchmarks and tools (readers).

    A model without metadata reads as the defaults: the FER2013 labels, default preprocessing,
    temperature 1. ``metrics`` holds the headline figures export copied from the checkpoint
    (``val_accuracy``, ``test_accuracy``, ...); ``extra`` everything else (``arch_args``,
    ``training_data``, ``opset``, ...).
    """

    labels: tuple[str, ...] = LABELS
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    temperature: float = 1.0
    arch: str | None = None
    precision: str | None = None
    checkpoint_sha256: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # --- writing ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "format": FORMAT, "format_version": self.schema_version,
                               "labels": list(self.labels), "preprocess": self.preprocess.to_dict(),
                               "temperature": self.temperature, "metrics": dict(self.metrics)}
        for name in ("arch", "precision", "checkpoint_sha256"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_changes(self, **changes: Any) -> ModelMetadata:
        return replace(self, **changes)

    # --- reading ---------------------------------------------------------------------------

    @classmethod
    def from_json(cls, raw: str | None, source: str = "model") -> ModelMetadata:
        """Parse and check ``raw`` (``None``: a model without metadata, read as the defaults)."""
        if raw is None:
            return cls()
        if len(raw) > MAX_JSON_CHARS:
            raise MetadataError(f"{source}: its {METADATA_KEY!r} metadata is {len(raw):,} characters (limit {MAX_JSON_CHARS:,})")
        try:
            data = json.loads(raw)
        except RecursionError:
            raise MetadataError(f"{source}: its {METADATA_KEY!r} metadata is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
            raise MetadataError(f"{source}: its {METADATA_KEY!r} metadata is not valid JSON ({str(exc)[:120]})") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "model") -> ModelMetadata:
        check = _Checker(source)
        if not isinstance(data, dict):
            raise MetadataError(f"{source}: its {METADATA_KEY!r} metadata is not a JSON object")
        version = check.integer(data, "format_version", SCHEMA_VERSION, 1, None)
        if version > SCHEMA_VERSION:
            raise MetadataError(f"{source}: metadata schema version {version} is newer than this fer-edge reads "
                                f"({SCHEMA_VERSION}); upgrade fer-edge")
        if data.get("format", FORMAT) != FORMAT:
            raise MetadataError(f"{source}: metadata format {str(data.get('format'))[:40]!r} is not {FORMAT!r}")
        known = {f.name for f in fields(cls)} | {"format", "format_version"}
        return cls(
            labels=check.labels(data), preprocess=check.preprocess(data),
            temperature=check.positive(data, "temperature", 1.0),
            arch=check.text(data, "arch"), precision=check.text(data, "precision"),
            checkpoint_sha256=check.text(data, "checkpoint_sha256"),
            metrics=check.mapping(data, "metrics"),
            extra={k: v for k, v in data.items() if k not in known}, schema_version=version,
        )


class _Checker:
    """One error style for every field: ``<model>: metadata field 'x' must be ..., got ...``."""

    def __init__(self, source: str, prefix: str = "") -> None:
        self.source, self.prefix = source, prefix

    def fail(self, name: str, wants: str, value: Any) -> MetadataError:
        shown = repr(value)
        return MetadataError(f"{self.source}: metadata field {self.prefix + name!r} must be {wants}, got "
                             f"{shown[:60] + '...' if len(shown) > 60 else shown}")

    def integer(self, data: Mapping[str, Any], name: str, default: int, low: int, high: int | None) -> int:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise self.fail(name, f"an integer {low}..{high}" if high else f"an integer >= {low}", value)
        return value

    def number(self, data: Mapping[str, Any], name: str, default: float) -> float:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise self.fail(name, "a finite number", value)
        return float(value)

    def positive(self, data: Mapping[str, Any], name: str, default: float) -> float:
        value = self.number(data, name, default)
        if value <= 0:
            raise self.fail(name, "a positive number", value)
        return value

    def text(self, data: Mapping[str, Any], name: str) -> str | None:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, "a string", value)
        return value

    def mapping(self, data: Mapping[str, Any], name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "an object", value)
        return value

    def labels(self, data: Mapping[str, Any]) -> tuple[str, ...]:
        value = data.get("labels", list(LABELS))
        if (not isinstance(value, list) or not 1 <= len(value) <= MAX_LABELS
                or not all(isinstance(v, str) and v for v in value)):
            raise self.fail("labels", f"a list of 1..{MAX_LABELS} non-empty strings", value)
        return tuple(value)

    def preprocess(self, data: Mapping[str, Any]) -> PreprocessConfig:
        value, inner = self.mapping(data, "preprocess"), _Checker(self.source, "preprocess.")
        equalize = value.get("equalize", True)
        if not isinstance(equalize, bool):
            raise inner.fail("equalize", "true or false", equalize)
        std, mean = inner.number(value, "std", 1.0), inner.number(value, "mean", 0.0)
        if not STD_RANGE[0] <= std <= STD_RANGE[1]:
            raise inner.fail("std", f"a number {STD_RANGE[0]:g}..{STD_RANGE[1]:g}", std)
        if abs(mean) > MEAN_LIMIT:
            raise inner.fail("mean", f"a number -{MEAN_LIMIT:g}..{MEAN_LIMIT:g}", mean)
        return PreprocessConfig(size=inner.integer(value, "size", 48, *SIZE_RANGE), equalize=equalize, mean=mean, std=std)
