"""The precision chosen per CPU: flags, the timed choice and its cache, and the recognizer's use of it."""

from __future__ import annotations

import json

import pytest

from fer_runtime import ConfigError, EmotionRecognizer
from fer_runtime import precision as prec
from fer_runtime.bundled import read_bundled

AVX2 = prec.Cpu("AMD EPYC 7B13", "x86_64", frozenset({"sse4_2", "avx2", "fma"}))
VNNI = prec.Cpu("AMD EPYC 9B14", "x86_64", frozenset({"avx2", "avx512f", "avx512_vnni"}))
REGISTRY = {"m": object(), "m-int8": object(), "solo": object(), "q-int8": object(), "m-fp16": object()}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(prec.CACHE_FILE_ENV, raising=False)
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
    assert prec.choose("m", REGISTRY, "named", never, cpu=AVX2) == prec.PrecisionChoice("m", "fp32", "named")
    assert prec.choose("m-fp16", REGISTRY, "auto", never, cpu=AVX2) == prec.PrecisionChoice("m-fp16", "fp16", "named")
    assert prec.choose("solo", REGISTRY, "auto", never, cpu=AVX2).reason == "the only variant"
    # a name whose only variant is the int8 one (a wheel install: NAME lives in a checkout)
    assert prec.choose("q", REGISTRY, "auto", never, cpu=AVX2) == prec.PrecisionChoice("q-int8", "int8", "the only variant")
    assert prec.choose("q", REGISTRY, "int8", never).name == "q-int8"
    with pytest.raises(ConfigError, match="no int8 variant; it has fp32"):
        prec.choose("solo", REGISTRY, "int8", never)
    with pytest.raises(ConfigError, match="names the int8 variant; ask for 'm'"):
        prec.choose("m-int8", REGISTRY, "fp32", never)
    with pytest.raises(ConfigError, match="precision must be one of auto, named, fp32, int8"):
        prec.choose("m", REGISTRY, "bf16", never)


def test_an_accelerator_takes_fp32():
    never, calls = _measure({})
    choice = prec.choose("m", REGISTRY, "auto", never, cpu=VNNI, accelerator=True)
    assert (choice.name, choice.precision) == ("m", "fp32") and calls == []


def test_the_first_answer_written_wins(cache_dir):
    """Two processes timing at once: the one that writes second takes the first one's answer."""
    def slow_rival(found):
        prec._write_cache(cache_dir / "precision.json", {"k": {"fp32": 5e-4, "int8": 1e-4}})  # written meanwhile
        return {"fp32": 1e-4, "int8": 5e-4}

    assert prec.choose("m", REGISTRY, "auto", slow_rival, cpu=AVX2, cache_key=lambda f: "k").name == "m-int8"


def test_no_home_means_no_cache_not_an_error(monkeypatch):
    monkeypatch.delenv(prec.CACHE_ENV)
    monkeypatch.setattr(prec.Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("no home"))))
    assert prec.cache_file() is None
    measure, calls = _measure({"fp32": 1e-4, "int8": 2e-4})
    assert prec.choose("m", REGISTRY, "auto", measure, cpu=AVX2, cache_key=lambda f: "k").name == "m"
    assert len(calls) == 1


def test_recognizer_states_the_choice_and_honours_an_override(monkeypatch):
    monkeypatch.setattr(prec, "this_cpu", lambda: VNNI)
    auto = EmotionRecognizer("vgg-deep")
    assert auto.info.source == "bundled:vgg-deep-int8" and auto.info.precision == "int8"
    assert auto.info.precision_reason == "the CPU has avx512_vnni" and "precision='int8'" in repr(auto)
    fp32 = EmotionRecognizer("vgg-deep", precision="fp32")
    assert (fp32.info.source, fp32.info.precision, fp32.info.precision_reason) == ("bundled:vgg-deep", "fp32", "asked for")
    assert EmotionRecognizer("vgg-deep", precision="named").info.source == "bundled:vgg-deep"
    both = EmotionRecognizer(ensemble=["vgg-deep", "vgg-taper-int8"])
    assert both.info.precision_reason == ("bundled:vgg-deep-int8: int8 (the CPU has avx512_vnni); "
                                          "bundled:vgg-taper-int8: int8 (named)")
    with pytest.raises(ConfigError, match="precision must be one of"):
        EmotionRecognizer(precision="fast")


def test_recognizer_times_both_variants_where_int8_has_no_fast_path(monkeypatch, cache_dir):
    monkeypatch.setattr(prec, "this_cpu", lambda: AVX2)
    timed = []
    real = prec.time_sessions
    monkeypatch.setattr("fer_runtime.recognizer.time_sessions",
                        lambda by_precision, size: timed.append(sorted(by_precision)) or real(by_precision, size))
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


def test_with_cuda_in_the_plan_auto_loads_fp32(monkeypatch):
    import onnxruntime as ort

    from fer_runtime.providers import CPU, CUDA

    real_session = ort.InferenceSession
    monkeypatch.setattr(prec, "this_cpu", lambda: VNNI)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", lambda data, sess_options=None, providers=None, **kw:
                        real_session(data, sess_options=sess_options, providers=[CPU], **kw))  # CUDA "failed"
    rec = EmotionRecognizer("vgg-deep")
    assert rec.info.source == "bundled:vgg-deep" and "accelerator" in rec.info.precision_reason
