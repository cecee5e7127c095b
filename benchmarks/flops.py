"""FLOPs of a model per image, and the machine's achievable peak measured with a large matmul."""

from __future__ import annotations

import time
from typing import Any


def count_flops(model: Any, input_shape: tuple[int, ...] = (1, 1, 48, 48)) -> int:
    """Floating-point operations (multiply and add counted apart) of one forward pass per image,
    over convolutions and linear layers: 2 * MACs (+ bias adds are ignored, as is customary)."""
    import torch
    from torch import nn

    total = 0

    def conv_hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2 * out.numel() * k  # whole batch; divided by the batch size below

    def linear_hook(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * m.in_features * m.out_features * (out.numel() // m.out_features)

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total // input_shape[0]


def measure_peak_gflops(threads: int, sizes: tuple[int, ...] = (512, 1024), seconds: float = 0.4) -> float:
    """Best fp32 GFLOP/s of square matrix products in ONNX Runtime (MLAS) with ``threads`` threads.

    ONNX Runtime's own GEMM, not torch.mm: on AMD CPUs PyTorch's MKL may take a slower code path,
    which would understate the machine. Best over sizes and repeats: the achievable peak.
    """
    import numpy as np
    from onnx import TensorProto, helper

    from fer_runtime.session import make_session

    best = 0.0
    for n in sizes:
        io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b", "c")]
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", io[:2], io[2:])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        session = make_session(model.SerializeToString(), "matmul probe", providers="cpu", threads=threads)
        feed = {"a": np.random.rand(n, n).astype(np.float32), "b": np.random.rand(n, n).astype(np.float32)}
        session.run(None, feed)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            session.run(None, feed)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best
