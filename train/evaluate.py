"""Evaluate a checkpoint on labelled faces: accuracy, macro-F1, per-class table, confusion matrix.

Horizontal-flip test-time augmentation (mean of the softmax of the face and its mirror)
is reported separately, never mixed into the single-crop figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fer_runtime import PreprocessConfig, preprocess
from fer_train.checkpoint import model_from_checkpoint
from fer_train.metrics import classification_report
from fer_train.models import predict_logits


def evaluate_checkpoint_on(
    ckpt: dict[str, Any], images: np.ndarray, labels: np.ndarray, flip_tta: bool = False
) -> dict[str, Any]:
    """``{"single": report, "flip_tta": report | None, "n": N}`` for uint8 faces and labels."""
    model = model_from_checkpoint(ckpt)
    x = torch.from_numpy(preprocess(images, PreprocessConfig.from_dict(ckpt["preprocess"])))
    probs = torch.softmax(predict_logits(model, x), 1)
    result: dict[str, Any] = {
        "n": len(labels),
        "single": classification_report(labels, probs.argmax(1).numpy()).to_dict(),
        "flip_tta": None,
    }
    if flip_tta:
        mirrored = torch.softmax(predict_logits(model, torch.flip(x, dims=[3])), 1)
        result["flip_tta"] = classification_report(labels, (probs + mirrored).argmax(1).numpy()).to_dict()
    return result
