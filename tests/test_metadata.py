"""ModelMetadata: the versioned contract export writes and everyone else reads."""

from __future__ import annotations

import json

import pytest

from fer_runtime import EmotionRecognizer, ModelError, PreprocessConfig
from fer_runtime.bundled import model_registry
from fer_runtime.metadata import SCHEMA_VERSION, MetadataError, ModelMetadata


def test_every_shipped_model_reads_and_round_trips():  # the wheel's and the checkout's, all older files
    for name in model_registry():
        meta = EmotionRecognizer(name, threads=1, precision="named").info.metadata
        assert meta.schema_version == SCHEMA_VERSION and meta.arch and meta.precision in ("fp32", "int8", "fp16")
        assert ModelMetadata.from_json(meta.to_json()) == meta
        assert "arch_args" in meta.extra and "format" not in meta.extra


def test_no_metadata_reads_as_the_defaults():
    meta = ModelMetadata.from_json(None)
    assert meta.preprocess == PreprocessConfig() and meta.temperature == 1.0 and len(meta.labels) == 7


def test_a_newer_schema_is_refused_with_upgrade_advice():
    raw = json.dumps({**ModelMetadata().to_dict(), "format_version": SCHEMA_VERSION + 1})
    with pytest.raises(MetadataError, match="newer than this fer-edge reads.*upgrade"):
        ModelMetadata.from_json(raw, "m.onnx")


@pytest.mark.parametrize("field, value, message", [
    ("labels", ["a", 3], "'labels' must be a list"),
    ("labels", [], "'labels' must be a list"),
    ("labels", None, "'labels' must be a list"),
    ("temperature", 0, "'temperature' must be a positive number"),
    ("temperature", None, "'temperature' must be a finite number"),
    ("temperature", True, "'temperature' must be a finite number"),
    ("preprocess", {"size": -4}, "'preprocess.size' must be an integer 8..1024"),
    ("preprocess", {"size": 10**9}, "'preprocess.size' must be an integer 8..1024"),
    ("preprocess", {"std": 0}, "'preprocess.std' must be a number 1e-06..1000"),
    ("preprocess", {"mean": 1e308}, "'preprocess.mean' must be a number -1000..1000"),
    ("preprocess", {"equalize": "yes"}, "'preprocess.equalize' must be true or false"),
    ("preprocess", [48], "'preprocess' must be an object"),
    ("metrics", "high", "'metrics' must be an object"),
    ("arch", 7, "'arch' must be a string"),
    ("format", "other", "format 'other' is not 'fer-edge-onnx'"),
    ("format_version", "1", "'format_version' must be an integer"),
])
def test_each_bad_field_is_named(field, value, message):
    raw = json.dumps({**ModelMetadata().to_dict(), field: value})
    with pytest.raises(MetadataError, match=message) as err:
        ModelMetadata.from_json(raw, "m.onnx")
    assert str(err.value).startswith("m.onnx: ") and isinstance(err.value, ModelError)


@pytest.mark.parametrize("raw, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply|not valid JSON"),
    ('{"temperature": ' + "9" * 5000 + "}", "not valid JSON"),
    ("{not json", "not valid JSON"),
    ('"just a string"', "not a JSON object"),
    (" " * 1_000_001, "characters"),
])
def test_hostile_json_is_a_metadata_error(raw, message):
    with pytest.raises(MetadataError, match=message):
        ModelMetadata.from_json(raw)


def test_with_changes_keeps_the_rest():
    meta = ModelMetadata(arch="seed", precision="fp32", metrics={"test_accuracy": 0.6}, extra={"opset": 18})
    int8 = meta.with_changes(precision="int8")
    assert (int8.arch, int8.precision, int8.extra, meta.precision) == ("seed", "int8", {"opset": 18}, "fp32")
