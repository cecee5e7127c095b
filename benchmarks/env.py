"""The machine and library versions a benchmark ran on, recorded next to its figures."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def _cpuinfo() -> tuple[str, list[str]]:
    from fer_runtime.precision import this_cpu  # the runtime's one reading of the CPU

    cpu = this_cpu()
    return cpu.model, [f for f in CPU_FLAGS if f in cpu.flags]


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    model, flags = _cpuinfo()
    env: dict[str, Any] = {
        "cpu": model,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in ("fer-edge", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "onnx")},
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if os.environ.get(k)},
    }
    try:
        import onnxruntime as ort

        env["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return env


def describe(env: dict[str, Any]) -> str:
    v = env["versions"]
    return (f"{env['cpu']} ({', '.join(env['cpu_flags']) or 'no AVX-512/AMX flags'}), {env['logical_cpus']} logical CPUs; "
            f"numpy {v['numpy']}, onnxruntime {v['onnxruntime'] or v['onnxruntime-gpu']}, torch {v['torch']}"
            + (f"; GPU {env['cuda']}" if env.get("cuda") else ""))
