"""The contenders: PyTorch (CPU, CUDA) and ONNX Runtime (fp32, int8, fp16; CPU, CUDA) behind one interface.

Every backend answers ``logits(x)`` for an already preprocessed float32 batch (model-only time)
and ``predict_proba(raw)`` for raw uint8 faces (end to end: the runtime's NumPy preprocessing,
inference, softmax). The PyTorch twin is the checkpoint the ONNX model was exported from,
verified by the sha256 recorded in the model's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_bench.checkout import checkout_path
from fer_runtime import EmotionRecognizer, PreprocessConfig, preprocess
from fer_runtime.bundled import model_registry
from fer_train.calibration import softmax


class BenchError(RuntimeError):
    """A benchmark cannot run as asked; the message says what to change."""


@dataclass
class OrtBackend:
    name: str
    model: str  # bundled name or path
    providers: str | list[str] = "cpu"
    _recognizers: dict[int | None, EmotionRecognizer] = field(default_factory=dict, repr=False)
    _threads: int | None = None
    device: str = "cpu"

    def set_threads(self, threads: int | None) -> None:
        self._threads = threads

    @property
    def recognizer(self) -> EmotionRecognizer:
        # Idle worker threads sleep instead of spinning: with the contenders interleaved on few
        # cores, a spinning pool would steal the other's CPU.
        if self._threads not in self._recognizers:
            self._recognizers[self._threads] = EmotionRecognizer(
                self.model, providers=self.providers, threads=self._threads,
                precision="named", session_config={"session.intra_op.allow_spinning": "0"})
        return self._recognizers[self._threads]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.recognizer.logits(x)

    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        return self.recognizer.predict_proba(raw)


@dataclass
class TorchBackend:
    name: str
    model: Any
    preprocess_config: PreprocessConfig
    device: str = "cpu"
    amp: bool = False

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()

    def set_threads(self, threads: int | None) -> None:
        import torch

        if threads is not None and self.device == "cpu":
            torch.set_num_threads(threads)

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device)
            if self.amp:
                with torch.autocast("cuda", dtype=torch.float16):
                    out = self.model(t)
            else:
                out = self.model(t)
            return out.float().cpu().numpy()  # .cpu() waits for the GPU: timings include the sync

    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        return softmax(self.logits(preprocess(raw, self.preprocess_config)))


def bundled_twin(name: str) -> Path:
    """The checkpoint a named model was exported from: ``models/<name>/best.pt`` of the source
    checkout (the wheel carries no PyTorch files)."""
    path = checkout_path("models", name, "best.pt")
    if not path.is_file():
        raise BenchError(f"no PyTorch twin for {name!r} at {path} (fer-bench finds twins in a source checkout); "
                         "pass --checkpoint")
    return path


def load_twin(model: str, checkpoint: str | Path | None) -> tuple[Any, dict[str, Any], Path]:
    """(torch model, checkpoint dict, path) for ``model``, checked against its metadata's checkpoint_sha256."""
    from fer_train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from fer_train.data import file_sha256

    base = model.removesuffix("-int8").removesuffix("-fp16")  # variants share their fp32 model's twin
    if checkpoint is None:
        if model not in model_registry():
            raise BenchError(f"{model}: pass --checkpoint with the fer-train checkpoint it was exported from")
        checkpoint = bundled_twin(base)
    path = Path(checkpoint)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise BenchError(str(exc)) from exc
    expected = EmotionRecognizer(model, providers="cpu", precision="named").info.metadata.checkpoint_sha256
    if expected and expected != file_sha256(path):
        raise BenchError(f"{path} is not the checkpoint {model} was exported from (sha256 differs); pass the right --checkpoint")
    return model_from_checkpoint(ckpt), ckpt, path


def variant(model: str, precision: str) -> str | None:
    """The int8 / fp16 sibling of a model: bundled ``<name>-<precision>`` or file ``<stem>.<precision>.onnx``."""
    names = model_registry()
    if model in names:
        name = f"{model}-{precision}"
        return name if name in names else None
    path = Path(model)
    sibling = path.with_name(f"{path.stem}.{precision}.onnx")
    return str(sibling) if sibling.is_file() else None


def make_backends(model: str, checkpoint: str | Path | None, *, gpu: bool | None = None) -> tuple[list[Any], dict[str, Any]]:
    """All contenders for ``model``: PyTorch fp32 first (the reference), then ONNX Runtime variants,
    then CUDA ones where a GPU is visible. Returns (backends, info about the model)."""
    import onnxruntime as ort
    import torch

    from fer_runtime.providers import CUDA

    names = model_registry()
    if model not in names and not Path(model).is_file():
        raise BenchError(f"{model}: no such model file (named models: {', '.join(sorted(names))})")
    twin, ckpt, ckpt_path = load_twin(model, checkpoint)
    pcfg = PreprocessConfig.from_dict(ckpt["preprocess"])
    backends: list[Any] = [TorchBackend("pytorch-fp32", twin, pcfg), OrtBackend("ort-fp32", model)]
    for precision in ("int8", "fp16"):
        sibling = variant(model, precision)
        if sibling:
            backends.append(OrtBackend(f"ort-{precision}", sibling))
    use_gpu = torch.cuda.is_available() if gpu is None else gpu
    if use_gpu:
        import copy

        backends.append(TorchBackend("pytorch-cuda-fp32", copy.deepcopy(twin), pcfg, device="cuda"))
        backends.append(TorchBackend("pytorch-cuda-amp", copy.deepcopy(twin), pcfg, device="cuda", amp=True))
    if CUDA in ort.get_available_providers():
        backends.append(OrtBackend("ort-cuda-fp32", model, providers=["cuda"], device="cuda"))
        fp16 = variant(model, "fp16")
        if fp16:
            backends.append(OrtBackend("ort-cuda-fp16", fp16, providers=["cuda"], device="cuda"))
    info = {"model": model, "checkpoint": str(ckpt_path), "arch": ckpt["arch"], "preprocess": pcfg.to_dict(),
            "labels": list(ckpt["labels"])}
    return backends, info
