"""Which precision of a model runs faster on this CPU: fp32 or int8.

int8 is fast where the CPU has integer dot-product instructions (x86 VNNI: AVX-512 VNNI, AVX-VNNI,
AMX; ARM's dot product): there ONNX Runtime's int8 kernels do four multiply-adds per lane per
instruction. Without them int8 may still win on some graphs and lose on others (depthwise
convolutions, small channel counts), so on such a CPU both variants are timed once at first load
(15 batch-1 runs of each: from a few milliseconds for the small models to a few hundred for the
largest fp32 one on a slow CPU) and the answer is cached on disk for every later process (keyed by
both files' sha256, the CPU, ONNX Runtime's version, the providers and the thread count; the first
answer written wins, so processes started together agree). On an accelerator (CUDA) "auto" takes fp32:
the int8 files are QDQ graphs that only a CPU runs as integer kernels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fer_runtime.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "named", "fp32", "int8")
INT8_SUFFIX = "-int8"
FP16_SUFFIX = "-fp16"
# CPU flags (as Linux's /proc/cpuinfo names them) under which int8 is taken without timing it.
FAST_INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp")
CACHE_ENV = "FER_CACHE_DIR"
CACHE_FILE_ENV = "FER_PRECISION_CACHE"  # the cache file itself, when it should live apart from the data cache
TIMED_RUNS = 12  # per variant, interleaved, after 3 warm-up runs each


@dataclass(frozen=True)
class Cpu:
    """What the choice depends on: the CPU's model name, its architecture and its flags."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def fast_int8_flag(self) -> str | None:
        """The first flag that makes int8 fast here, or None."""
        if self.machine in ("arm64", "aarch64") and platform.system() == "Darwin":
            return "asimddp"  # every Apple-silicon core has the dot-product extension
        return next((f for f in FAST_INT8_FLAGS if f in self.flags), None)


@lru_cache(maxsize=1)
def this_cpu() -> Cpu:
    """The CPU this process runs on (Linux: /proc/cpuinfo; elsewhere: the platform's names, no flags)."""
    machine = platform.machine().lower()
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return Cpu(platform.processor() or machine, machine, frozenset())
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags") or fields.get("Features") or ""  # x86 / ARM
    model = fields.get("model name") or fields.get("CPU part") or machine
    return Cpu(model, machine, frozenset(flags.split()))


@dataclass(frozen=True)
class PrecisionChoice:
    """The variant a model name resolved to, and why (what ``ModelInfo.precision_reason`` says)."""

    name: str
    precision: str
    reason: str


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def variants(name: str, registry: dict[str, Any]) -> dict[str, str]:
    """``{"fp32": NAME, "int8": NAME-int8}`` for a model name, keeping only the variants the registry
    has. ``NAME-int8`` names the int8 variant itself: its fp32 sibling is ``NAME``. A ``-fp16`` name
    is a family of its own (for GPUs): ``{"fp16": NAME-fp16}``."""
    if name.endswith(FP16_SUFFIX):
        return {"fp16": name} if name in registry else {}
    base = name[: -len(INT8_SUFFIX)] if name.endswith(INT8_SUFFIX) else name
    found = {"fp32": base, "int8": base + INT8_SUFFIX}
    return {p: n for p, n in found.items() if n in registry}


def choose(name: str, registry: dict[str, Any], precision: str,
           measure: Callable[[dict[str, str]], dict[str, float]], cpu: Cpu | None = None,
           cache_key: Callable[[dict[str, str]], str] | None = None, accelerator: bool = False) -> PrecisionChoice:
    """The variant of model ``name`` to load (the registry must hold ``name`` or one of its variants).

    ``"named"``: exactly ``name``. ``"fp32"`` or ``"int8"``: that variant (ConfigError if there is
    none). ``"auto"``: a name that ends in ``-int8`` or ``-fp16`` as named; for another name with
    both variants, fp32 on an ``accelerator``, int8 where the CPU has a fast-int8 flag, and
    otherwise the faster of the two by ``measure(variants) -> {precision: seconds}``, cached under
    ``cache_key(variants)``. A name with one variant in the registry gets that one.
    """
    check_precision(precision)
    found = variants(name, registry)
    kind = "fp16" if name.endswith(FP16_SUFFIX) else "int8" if name.endswith(INT8_SUFFIX) else "fp32"
    if precision == "named" or (precision == "auto" and kind != "fp32"):
        return PrecisionChoice(name, kind, "named")
    if precision != "auto":
        if precision not in found:
            raise ConfigError(f"{name!r} has no {precision} variant; it has {', '.join(found) or 'none'}")
        if name != found[precision] and kind != "fp32":
            raise ConfigError(f"{name!r} names the {kind} variant; ask for {found.get('fp32', name)!r} "
                              f"with precision={precision!r}")
        return PrecisionChoice(found[precision], precision, "asked for")
    if len(found) < 2:
        only = next(iter(found.items()), ("fp32", name))
        return PrecisionChoice(only[1], only[0], "the only variant")
    if accelerator:
        return PrecisionChoice(found["fp32"], "fp32", "an accelerator runs int8 QDQ graphs as float")
    flag = (cpu or this_cpu()).fast_int8_flag
    if flag is not None:
        return PrecisionChoice(found["int8"], "int8", f"the CPU has {flag}")
    times = _cached(cache_key(found) if cache_key else None, lambda: measure(found))
    best = min(times, key=times.get)  # type: ignore[arg-type]
    said = ", ".join(f"{p} {times[p] * 1e3:.3f} ms" for p in ("fp32", "int8"))
    return PrecisionChoice(found[best], best, f"faster here at batch 1 ({said}; no fast-int8 flag)")


def cache_key(shas: dict[str, str], threads: int | None, providers: Sequence[str] = (), cpu: Cpu | None = None) -> str:
    """What a cached timing is valid for: both files, this CPU, ONNX Runtime's version, the providers
    and the threads."""
    import onnxruntime as ort

    cpu = cpu or this_cpu()
    text = json.dumps([sorted(shas.items()), cpu.model, sorted(cpu.flags), ort.__version__, list(providers), threads])
    return hashlib.sha256(text.encode()).hexdigest()


def time_sessions(sessions: dict[str, Any], size: int) -> dict[str, float]:
    """Median seconds of one batch-1 run per session (faces ``size`` square), interleaved, warm-up first."""
    face = np.zeros((1, 1, size, size), np.float32)
    feeds = {p: (s, {s.get_inputs()[0].name: face}) for p, s in sessions.items()}
    times: dict[str, list[float]] = {p: [] for p in sessions}
    for i in range(3 + TIMED_RUNS):
        for p, (session, feed) in feeds.items():
            start = time.perf_counter()
            session.run(None, feed)
            if i >= 3:
                times[p].append(time.perf_counter() - start)
    return {p: float(np.median(t)) for p, t in times.items()}


def cache_file() -> Path | None:
    """``$FER_PRECISION_CACHE``, else ``$FER_CACHE_DIR/precision.json``, else under ``~/.cache/fer-edge``;
    None without a home."""
    if os.environ.get(CACHE_FILE_ENV):
        return Path(os.environ[CACHE_FILE_ENV])
    root = os.environ.get(CACHE_ENV)
    if not root:
        try:
            root = str(Path.home() / ".cache" / "fer-edge")
        except (RuntimeError, KeyError, OSError):  # no HOME and no passwd entry (a container's arbitrary UID)
            return None
    return Path(root) / "precision.json"


def _valid(entry: Any) -> bool:
    return (isinstance(entry, dict) and set(entry) == {"fp32", "int8"}
            and all(isinstance(v, float) and v > 0 for v in entry.values()))


def _cached(key: str | None, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The cached timings under ``key``, else measured and written; if another process wrote the key
    meanwhile, its answer wins, so processes that started together load the same variant."""
    path = cache_file() if key is not None else None
    if path is None or key is None:
        return measure()
    hit = _read_cache(path).get(key)
    if _valid(hit):
        return hit  # type: ignore[no-any-return]
    times = measure()
    entries = _read_cache(path)
    if _valid(entries.get(key)):
        return entries[key]  # type: ignore[no-any-return]
    _write_cache(path, {**entries, key: times})
    return times


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or damaged: measured again and rewritten
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    """Atomically (a temporary file, then rename); a cache that cannot be written only costs a re-measure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".precision.", suffix=".tmp")
    except OSError as exc:
        log.debug("precision cache %s not written: %s", path, exc)
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entries, f)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        log.debug("precision cache %s not written: %s", path, exc)
