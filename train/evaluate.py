"""Evaluate a checkpoint on labelled faces: accuracy, macro-F1, per-class table, confusion matrix.

Horizontal-flip test-time augmentation (mean of the softmax of the face and its mirror)
is reported separately, never mixed into the single-crop figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fer_runtime import PreprocessConfig, preprocess
from fer_train.calibration import softmax
from fer_train.checkpoint import Checkpoint, as_checkpoint
from fer_train.metrics import classification_report
from fer_train.models import predict_logits


def checkpoint_logits(ckpt: dict[str, Any] | Checkpoint, images: np.ndarray,
                      flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """fp32 logits of uint8 faces (and of their mirror images when ``flip_tta``)."""
    ckpt = as_checkpoint(ckpt)
    model = ckpt.model()
    x = torch.from_numpy(preprocess(images, PreprocessConfig.from_dict(ckpt.preprocess)))
    logits = predict_logits(model, x).numpy()
    mirrored = predict_logits(model, torch.flip(x, dims=[3])).numpy() if flip_tta else None
    return logits, mirrored


def ensemble_logits(ckpts: list[dict[str, Any] | Checkpoint], images: np.ndarray, flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The mean of several checkpoints' logits (and of their mirror-image logits when ``flip_tta``):
    the ensemble ``fer-train --teacher A --teacher B`` distils from. One checkpoint: its own logits."""
    if not ckpts:
        raise ValueError("no checkpoints to evaluate")
    ckpts = [as_checkpoint(c) for c in ckpts]
    labels = [tuple(c.labels) for c in ckpts]
    if len(set(labels)) > 1:
        raise ValueError(f"the checkpoints predict different labels: {sorted(set(labels))}")
    pairs = [checkpoint_logits(c, images, flip_tta) for c in ckpts]
    logits = np.mean([p[0] for p in pairs], axis=0)
    mirrored = np.mean([p[1] for p in pairs], axis=0) if flip_tta else None
    return logits, mirrored


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, mirrored: np.ndarray | None = None) -> dict[str, Any]:
    """``{"single": report, "flip_tta": report | None, "n": N}``."""
    result: dict[str, Any] = {"n": len(labels), "single": classification_report(labels, logits.argmax(1)).to_dict(),
                              "flip_tta": None}
    if mirrored is not None:
        result["flip_tta"] = classification_report(labels, (softmax(logits) + softmax(mirrored)).argmax(1)).to_dict()
    return result

