"""Latency of architectures before training them: ``fer-bench arch``.

Training a candidate costs 40-110 minutes here; its batch-1 latency can be known in one. Each
candidate is built with random weights (latency does not depend on their values), exported to
ONNX fp32 and to static int8 the way ``fer-export`` does (calibrated on random faces: enough for
timing, not for accuracy), and timed model-only at batch 1 with ONNX Runtime, all candidates
interleaved call by call in a fresh random order each round (idle worker threads sleeping, as in
``fer-bench latency``). Ratios are medians of per-round ratios against the first candidate of the
same precision.

A candidate is a registered architecture name, optionally with overrides of its builder's
arguments: ``vgg-small:widths=24-48-96-192,blocks=1-2-2-3`` (tuples dash-separated). Input size,
channels and classes are fixed: they are the runtime's contract. ``model:NAME`` is a bundled,
trained model instead (its fp32 file and its ``NAME-int8`` sibling, sha256-checked, as shipped):
trained models compared with each other, interleaved, after training.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_bench.stats import interleaved, paired_ratio, percentiles

PRECISIONS = ("fp32", "int8")


FIXED = ("in_channels", "num_classes", "input_size")  # the runtime's input and output: not for timing here
BUNDLED_PREFIX = "model:"


def _bundled_candidate(spec: str, folder: Path, i: int) -> dict[str, Any]:
    """A ``model:NAME`` candidate: the bundled fp32 and int8 files, written into ``folder``."""
    from fer_bench.flops import count_flops
    from fer_runtime.bundled import model_registry, read_bundled
    from fer_runtime.errors import ModelError
    from fer_runtime.metadata import METADATA_KEY, ModelMetadata
    from fer_train.models import build_model

    name = spec[len(BUNDLED_PREFIX):]
    names = model_registry()
    if name not in names or f"{name}-int8" not in names:
        fp32s = sorted(n for n in names if f"{n}-int8" in names)
        raise ValueError(f"{spec!r}: no bundled fp32 model {name!r} with an int8 sibling; bundled: {', '.join(fp32s)}")
    files = {"fp32": folder / f"c{i}.onnx", "int8": folder / f"c{i}.int8.onnx"}
    try:
        for precision, suffix in (("fp32", ""), ("int8", "-int8")):
            files[precision].write_bytes(read_bundled(name + suffix))
    except ModelError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    import onnx

    props = {p.key: p.value for p in onnx.load(str(files["fp32"]), load_external_data=False).metadata_props}
    meta = ModelMetadata.from_json(props.get(METADATA_KEY), spec)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.extra["arch_args"].items()}
    return {"spec": spec, "arch": meta.arch, "overrides": {}, "bundled": name,
            "parameters": int(meta.extra["num_parameters"]), "mflop": count_flops(build_model(meta.arch, **args).eval()) / 1e6,
            "files": files}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``'vgg:widths=24-48-96-192,dropout=0.2'`` -> ``('vgg', {'widths': (24, 48, 96, 192), 'dropout': 0.2})``.

    Each value takes the type of the architecture's default (a tuple, an int or a float), so a
    wrong type is a ValueError naming the spec, and so is an unknown name or argument.
    """
    from fer_train.models import ARCHITECTURES, arch_args

    name, _, rest = spec.partition(":")
    if name not in ARCHITECTURES:
        raise ValueError(f"{spec!r}: unknown architecture {name!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
    defaults = ARCHITECTURES[name][1]
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise ValueError(f"{spec!r}: overrides look like key=value, got {item!r}")
        if key not in defaults or key in FIXED:
            allowed = sorted(k for k in defaults if k not in FIXED)
            raise ValueError(f"{spec!r}: {key!r} cannot be overridden; {name} takes {', '.join(allowed)}")
        default = defaults[key]
        try:
            if isinstance(default, tuple):
                overrides[key] = tuple(int(v) for v in value.split("-"))
            else:
                overrides[key] = type(default)(value)
        except ValueError:
            kind = "dash-separated integers" if isinstance(default, tuple) else type(default).__name__
            raise ValueError(f"{spec!r}: {key} must be {kind}, got {value!r}") from None
    try:
        arch_args(name, **overrides)  # builds it once: inconsistent overrides fail here, before any export
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    return name, overrides


def export_candidates(specs: Sequence[str], folder: Path, seed: int = 0) -> list[dict[str, Any]]:
    """Build, describe and export each candidate (fp32 and int8) into ``folder``. Raises ValueError on a bad spec."""
    import torch

    from fer_bench.flops import count_flops
    from fer_export.onnx_export import ExportError, quantize_int8, to_onnx
    from fer_train.models import build_model, count_parameters, for_inference

    if len(set(specs)) != len(specs):
        raise ValueError("each candidate may be named once")
    # Every spec checked before the first (slow) export; bundled models are read (and checked) here too.
    parsed = [None if spec.startswith(BUNDLED_PREFIX) else parse_spec(spec) for spec in specs]
    bundled = {i: _bundled_candidate(spec, folder, i) for i, spec in enumerate(specs) if parsed[i] is None}
    calib = np.random.default_rng(seed).normal(size=(64, 1, 48, 48)).astype(np.float32)
    out = []
    for i, (spec, parsed_spec) in enumerate(zip(specs, parsed)):
        if parsed_spec is None:
            out.append(bundled[i])
            continue
        name, overrides = parsed_spec
        torch.manual_seed(seed)
        model = build_model(name, **overrides).eval()
        fp32, int8 = folder / f"c{i}.onnx", folder / f"c{i}.int8.onnx"
        model = for_inference(model)  # RepConv branches folded, as fer-export writes them
        to_onnx(model, 48, fp32)
        try:
            quantize_int8(fp32, int8, calib)
        except Exception as exc:  # onnxruntime's quantizer raises many types
            raise ExportError(f"{spec!r}: int8 quantization failed: {type(exc).__name__}: {exc}") from exc
        out.append({"spec": spec, "arch": name, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in overrides.items()},
                    "parameters": count_parameters(model), "mflop": count_flops(model) / 1e6,
                    "files": {"fp32": fp32, "int8": int8}})
    return out


def time_candidates(candidates: list[dict[str, Any]], thread_counts: Sequence[int], rounds: int,
                    progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Batch-1 model-only latency of every (candidate, precision) per thread count, interleaved."""
    from fer_runtime.session import make_session

    x = np.random.default_rng(1).normal(size=(1, 1, 48, 48)).astype(np.float32)
    rows = []
    for threads in thread_counts:
        progress(f"{threads} thread(s)")
        runners = {}
        for c in candidates:
            for precision in PRECISIONS:
                path = c["files"][precision]
                session = make_session(path.read_bytes(), str(path), providers="cpu", threads=threads)
                feed = {session.get_inputs()[0].name: x}
                runners[(c["spec"], precision)] = (session, feed)
        for session, feed in runners.values():
            for _ in range(20):  # warm-up
                session.run(None, feed)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
        for _, key in interleaved(list(runners), rounds, np.random.default_rng(threads)):
            session, feed = runners[key]
            t0 = time.perf_counter()
            session.run(None, feed)
            times[key].append(time.perf_counter() - t0)
        first = candidates[0]["spec"]
        for c in candidates:
            for precision in PRECISIONS:
                t = times[(c["spec"], precision)]
                rows.append({"spec": c["spec"], "precision": precision, "threads": threads, **percentiles(t),
                             "ratio_to_first": paired_ratio(t, times[(first, precision)])})
    return rows


def run_candidates(specs: Sequence[str], thread_counts: Sequence[int], rounds: int,
                   progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    if not specs:
        raise ValueError("name at least one architecture")
    if rounds < 10:
        raise ValueError("--rounds must be at least 10")
    with tempfile.TemporaryDirectory() as tmp:
        progress("exporting")
        candidates = export_candidates(specs, Path(tmp))
        rows = time_candidates(candidates, thread_counts, rounds, progress)
    for c in candidates:
        del c["files"]
    return {"candidates": candidates, "latency": rows, "rounds": rounds}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| candidate | parameters | MFLOP | threads | precision | p50 ms | p90 ms | vs first |",
             "|---|---|---|---|---|---|---|---|"]
    info = {c["spec"]: c for c in result["candidates"]}
    for r in result["latency"]:
        c = info[r["spec"]]
        lines.append(f"| `{r['spec']}` | {c['parameters']:,} | {c['mflop']:.1f} | {r['threads']} | {r['precision']} | "
                     f"{r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['ratio_to_first']:.2f}x |")
    return "\n".join(lines) + "\n"
