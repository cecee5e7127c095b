"""The precision chosen per CPU: flags, the timed choice and its cache, and the recognizer's use of it."""

from __future__ import annotations

import json

import pytest

from fer_runtime import ConfigError, EmotionRecognizer, named_precision
from fer_runtime import precision as prec
from fer_runtime.bundled import read_bundled

AVX2 = prec.Cpu("AMD EPYC 7B13", "x86_64", frozenset({"sse4_2", "avx2", "fma"}))
VNNI = prec.Cpu("AMD EPYC 9B14", "x86_64", frozenset({"avx2", "avx512f", "avx512_vnni"}))
REGISTRY = {"m": object(), "m-int8": object(), "solo": object()}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(prec.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _measure(times):
    calls = []

    def measure(found):
        calls.append(dict(found))
        return dict(times)

    return measure, calls


def test_fast_int8_flags():
    assert VNNI.fast_int8_flag == "avx512_vnni" and AVX2.fast_int8_flag is None
    assert prec.Cpu("Xeon", "x86_64", frozenset({"avx_vnni"})).fast_int8_flag == "avx_vnni"
    assert prec.Cpu("Neoverse", "aarch64", frozenset({"asimd", "asimddp"})).fast_int8_flag == "asimddp"
    assert prec.this_cpu().machine  # reads this machine without failing


def test_vnni_takes_int8_without_timing():
    measure, calls = _measure({"fp32": 1.0, "int8": 2.0})
    choice = prec.choose("m", REGISTRY, "auto", measure, cpu=VNNI)
    assert (choice.name, choice.precision, choice.reason) == ("m-int8", "int8", "the CPU has avx512_vnni")
    assert calls == []


@pytest.mark.parametrize(("times", "expected"), [({"fp32": 2e-4, "int8": 3e-4}, "m"), ({"fp32": 4e-4, "int8": 3e-4}, "m-int8")])
def test_without_fast_int8_the_faster_is_measured_once_and_cached(times, expected, cache_dir):
    measure, calls = _measure(times)
    first = prec.choose("m", REGISTRY, "auto", measure, cpu=AVX2, cache_key=lambda found: "k1")
    again = prec.choose("m", REGISTRY, "auto", measure, cpu=AVX2, cache_key=lambda found: "k1")
    assert first == again and first.name == expected and len(calls) == 1
    assert calls[0] == {"fp32": "m", "int8": "m-int8"}
    assert "faster here" in first.reason and "fp32 " in first.reason and "int8 " in first.reason
    assert json.loads((cache_dir / "precision.json").read_text())["k1"] == times
    prec.choose("m", REGISTRY, "auto", measure, cpu=AVX2, cache_key=lambda found: "k2")  # another key: measured
    assert len(calls) == 2


def test_a_damaged_or_unwritable_cache_only_costs_a_measurement(cache_dir, monkeypatch, tmp_path):
    cache_dir.mkdir()
    (cache_dir / "precision.json").write_text("{not json")
    measure, calls = _measure({"fp32": 1e-4, "int8": 2e-4})
    assert prec.choose("m", REGISTRY, "auto", measure, cpu=AVX2, cache_key=lambda f: "k").name == "m"
    assert json.loads((cache_dir / "precision.json").read_text()) == {"k": {"fp32": 1e-4, "int8": 2e-4}}
    (cache_dir / "precision.json").write_text(json.dumps({"k": {"fp32": "fast"}}))  # a wrong entry is not trusted
    prec.choose("m", REGISTRY, "auto", measure, cpu=AVX2, cache_key=lambda f: "k")
    assert len(calls) == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(prec.CACHE_ENV, str(blocker / "sub"))  # cannot be made: no cache, no error
    assert prec.choose("m", REGISTRY, "auto", measure, cpu=AVX2, cache_key=lambda f: "k").name == "m"
    assert not list(cache_dir.glob(".precision.*"))  # no temporary file left behind


def test_explicit_and_named_choices():
    never, _ = _measure({})
    assert prec.choose("m", REGISTRY, "fp32", never).name == "m"
    assert prec.choose("m", REGISTRY, "int8", never).name == "m-int8"
    assert prec.choose("m-int8", REGISTRY, "int8", never).reason == "asked for"
    assert prec.choose("m-int8", REGISTRY, "auto", never, cpu=AVX2) == prec.PrecisionChoice("m-int8", "int8", "named")
    assert prec.choose("solo", REGISTRY, "auto", never, cpu=AVX2).reason == "the only variant"
    with pytest.raises(ConfigError, match="no int8 variant; it has fp32"):
        prec.choose("solo", REGISTRY, "int8", never)
    with pytest.raises(ConfigError, match="names the int8 variant; ask for 'm'"):
        prec.choose("m-int8", REGISTRY, "fp32", never)
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, int8"):
        prec.choose("m", REGISTRY, "bf16", never)


def test_named_precision_loads_exactly_what_is_named():
    assert [named_precision(m) for m in (None, "vgg-deep", "vgg-taper-int8", "x/model.int8.onnx", "m.onnx")] == [
        "fp32", "fp32", "int8", "auto", "auto"]


def test_recognizer_states_the_choice_and_honours_an_override(monkeypatch):
    monkeypatch.setattr(prec, "this_cpu", lambda: VNNI)
    auto = EmotionRecognizer("vgg-deep")
    assert auto.info.source == "bundled:vgg-deep-int8" and auto.info.precision == "int8"
    assert auto.info.precision_reason == "the CPU has avx512_vnni" and "precision='int8'" in repr(auto)
    fp32 = EmotionRecognizer("vgg-deep", precision="fp32")
    assert (fp32.info.source, fp32.info.precision, fp32.info.precision_reason) == ("bundled:vgg-deep", "fp32", "asked for")


def test_recognizer_times_both_variants_where_int8_has_no_fast_path(monkeypatch, cache_dir):
    monkeypatch.setattr(prec, "this_cpu", lambda: AVX2)
    timed = []
    real = prec.time_sessions
    monkeypatch.setattr("fer_runtime.recognizer.time_sessions", lambda sessions: timed.append(sorted(sessions)) or real(sessions))
    first = EmotionRecognizer(precision="auto", threads=1)
    second = EmotionRecognizer(precision="auto", threads=1)  # the cached answer: not timed again
    assert timed == [["fp32", "int8"]]
    assert first.info.source == second.info.source in ("bundled:vgg-deep", "bundled:vgg-deep-int8")
    assert "faster here at batch 1" in first.info.precision_reason
    EmotionRecognizer(precision="auto", threads=2)  # another thread count is another measurement
    assert len(timed) == 2


def test_a_file_is_used_as_it_is(tmp_path):
    path = tmp_path / "model.int8.onnx"
    path.write_bytes(read_bundled("vgg-deep-int8"))
    assert EmotionRecognizer(str(path)).info.precision == "int8"
    assert EmotionRecognizer(str(path), precision="int8").info.precision_reason == "the file as given"
    with pytest.raises(ConfigError, match="is int8, not fp32"):
        EmotionRecognizer(str(path), precision="fp32")
