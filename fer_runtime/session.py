"""The one place that builds ONNX Runtime sessions, for the classifier and the face detector alike."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_runtime.errors import ConfigError, ModelError
from fer_runtime.providers import resolve_providers, verify_applied

log = logging.getLogger(__name__)

# ORT's worker threads spin while waiting for work; on a small, shared CPU that steals the core
# the caller needs next (BENCHMARKS.md, "Whole frames": 2 threads with spinning doubled detect latency), so spinning is off
# unless asked for.
SPINNING_DEFAULT = False

# ONNX Runtime graph transformers every session leaves out. QDQPropagationTransformer moves the
# int8 models' first QuantizeLinear above the full-resolution MaxPool (max commutes with
# quantization), where ORT has only a slow NCHW uint8 MaxPool: left out, the pool runs in float and
# the outputs are bit-identical, 11-29% less time per face at batch 1 (experiments/qdq_propagation.py).
DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)


class PicklesByArguments:
    """Pickled as the arguments that made it, so it is rebuilt (session included) where it is unpickled.

    An ONNX Runtime session belongs to one process; a recognizer or detector sent to a process
    pool or a worker is made again there from the same model name or path and options. Decorate
    ``__init__`` with :func:`remember_arguments`.
    """

    _init_args: tuple[tuple[Any, ...], dict[str, Any]]

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._init_args
        if kwargs.get("session") is not None:
            raise TypeError(f"a {type(self).__name__} made with an injected session cannot be pickled: "
                            "send its model name or path and options, and build it where it runs")
        return _rebuild, (type(self), args, kwargs)


def remember_arguments(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: PicklesByArguments, *args: Any, **kwargs: Any) -> None:
        self._init_args = (args, kwargs)
        init(self, *args, **kwargs)

    return wrapper


def _rebuild(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


def in_chunks(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: int) -> np.ndarray:
    """``run`` over ``batch`` in slices of at most ``size`` rows, concatenated (one call when it fits):
    the one chunking of model inference, for sessions and benchmark backends alike."""
    if len(batch) <= size:
        return run(batch)
    return np.concatenate([run(batch[i : i + size]) for i in range(0, len(batch), size)])


def read_model_bytes(
    model: str | os.PathLike[str] | None,
    bundled: dict[str, Any],
    default: str,
    read_bundled: Callable[[str], bytes],
    hint: Callable[[str], str] | None = None,
) -> tuple[bytes, str]:
    """The model's bytes and a name for messages: a bundled name (sha256-checked) or a file path.

    ``hint(name)``: said when ``model`` looks like a name (no folder, no ``.onnx``) but is neither."""
    if model is None or (isinstance(model, str) and model in bundled):
        name = default if model is None else str(model)
        return read_bundled(name), f"bundled:{name}"
    path = Path(model)
    if not path.is_file():
        looks_like_name = isinstance(model, str) and path.name == model and path.suffix != ".onnx"
        extra = f"; {hint(model)}" if hint is not None and looks_like_name else ""
        raise ModelError(f"{path}: no such model file (bundled: {', '.join(sorted(bundled))}){extra}")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc})") from exc


def check_threads(threads: int | None) -> None:
    """ConfigError unless ``threads`` is None or an int >= 1."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be None or an int >= 1, got {threads!r}")


def make_session(
    data: bytes,
    source: str,
    *,
    providers: str | Sequence[str] = "auto",
    threads: int | None = None,
    spinning: bool = SPINNING_DEFAULT,
    config: dict[str, str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the chosen providers, with a silent fallback reported.

    ``threads``: intra-op threads (``None``: ONNX Runtime's default, one per core). ``spinning``:
    whether idle ORT threads busy-wait for the next run. ``config``: extra session config entries,
    applied last so they win.
    """
    import onnxruntime as ort

    check_threads(threads)
    plan = resolve_providers(providers, ort.get_available_providers())
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # ORT's own warnings would duplicate ours
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1  # the graphs are sequential; a second pool only adds threads
    entries = {"session.intra_op.allow_spinning": "1" if spinning else "0", **(config or {})}
    for key, value in entries.items():
        opts.add_session_config_entry(key, value)
    try:
        session = ort.InferenceSession(data, sess_options=opts, providers=plan.providers,
                                       disabled_optimizers=list(DISABLED_OPTIMIZERS))
    except Exception as exc:  # ORT raises its own exception types for invalid or truncated models
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ModelError(f"{source}: not a valid ONNX model ({type(exc).__name__}: {first})") from exc
    verify_applied(plan, session.get_providers())
    log.debug("%s: session on %s, threads=%s, spinning=%s", source, session.get_providers(), threads, spinning)
    return session
