"""Execution-provider choice: pure functions, tested with fake availability lists."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fer_runtime.errors import ProviderError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Short names accepted wherever providers are given (CLI --providers cuda,cpu).
ALIASES: dict[str, str] = {
    "cpu": CPU,
    "cuda": CUDA,
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
# What "auto" tries, best first; CPU always closes the list.
AUTO_PREFERENCE: tuple[str, ...] = (CUDA, CPU)


def normalize(name: str) -> str:
    full = ALIASES.get(name.strip().lower(), name.strip())
    if not full.endswith("ExecutionProvider"):
        raise ProviderError(f"unknown execution provider {name!r}; use one of {', '.join(sorted(ALIASES))} or a full ONNX Runtime name")
    return full


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to ask ONNX Runtime for, and whether ending up on the CPU is acceptable."""

    providers: list[str]
    cpu_fallback_ok: bool


def resolve_providers(requested: str | Sequence[str], available: Sequence[str]) -> ProviderPlan:
    """Decide the providers for a session.

    ``"auto"``: the preferred providers that are available, ending with CPU. An explicit list
    (names or aliases, or one comma-separated string): each requested provider that is available,
    in order, with CPU appended for operators the accelerator lacks. Requested providers that are
    missing are logged; if none of them is available (e.g. ``["CUDAExecutionProvider"]`` on a
    machine without CUDA), that is a :class:`ProviderError`, not a silent switch to the CPU.
    """
    if isinstance(requested, str):
        if requested.strip().lower() == "auto":
            return ProviderPlan([p for p in AUTO_PREFERENCE if p in available or p == CPU], cpu_fallback_ok=True)
        requested = [p for p in requested.split(",") if p.strip()]
    wanted = list(dict.fromkeys(normalize(p) for p in requested))
    if not wanted:
        raise ProviderError("no execution provider given; use 'auto', 'cpu' or 'cuda'")
    chosen = [p for p in wanted if p in available or p == CPU]
    missing = [p for p in wanted if p not in chosen]
    if not chosen:
        hint = " (install 'fer-edge[gpu]' for onnxruntime-gpu, and CUDA)" if CUDA in missing else ""
        raise ProviderError(
            f"{', '.join(missing)} not available in this ONNX Runtime (available: {', '.join(available)}){hint}; "
            "use providers='auto' to fall back to the CPU"
        )
    if missing:
        log.warning("execution providers not available here, skipped: %s", ", ".join(missing))
    return ProviderPlan(chosen if CPU in chosen else [*chosen, CPU], cpu_fallback_ok=CPU in wanted)


def verify_applied(plan: ProviderPlan, applied: Sequence[str]) -> list[str]:
    """Compare what the session applied with the plan; returns the providers it silently dropped.

    ONNX Runtime drops a provider whose libraries fail to load (e.g. CUDA without cuDNN) and runs
    on the CPU. That is reported: a warning where CPU was acceptable, else a :class:`ProviderError`.
    """
    dropped = [p for p in plan.providers if p not in applied]
    if not dropped:
        return []
    accelerated = [p for p in applied if p != CPU]
    if not accelerated and not plan.cpu_fallback_ok:
        raise ProviderError(f"ONNX Runtime could not apply {', '.join(dropped)} (applied: {', '.join(applied)}); "
                            "check the CUDA/cuDNN installation or use providers='auto'")
    log.warning("ONNX Runtime fell back: %s requested but not applied; running on %s",
                ", ".join(dropped), ", ".join(applied))
    return dropped
