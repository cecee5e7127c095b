"""The values fer-train's options accept: one tuple each, checked by TrainConfig and offered by the CLI.

Torch-free, so that the CLI builds its choices without importing torch (``--help`` stays instant).
Architecture names are not here: they are the keys of ``fer_train.models.ARCHITECTURES``.
"""

from __future__ import annotations

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "none")
CLASS_WEIGHTS = ("none", "balanced", "sqrt")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EVAL_SPLITS = ("PublicTest", "val", "Training", "PrivateTest")  # fer-eval --split; val: the checkpoint's own
