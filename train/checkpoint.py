"""Self-describing checkpoints, written atomically.

A checkpoint is one ``torch.save`` file holding everything needed to rebuild and
describe the model (architecture name and arguments, weights, labels, preprocessing
config, training config, epoch, metrics, data description); ``last.pt`` also holds the
optimizer and scheduler state for ``--resume``. Only tensors, dicts, lists and plain
values are stored, so loading uses ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "fer-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "arch", "arch_args", "state_dict", "labels", "preprocess")


class CheckpointError(ValueError):
    """The file is missing, truncated or not a fer checkpoint."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; raises :class:`CheckpointError` with a reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}); is it truncated, or not written by fer-train?"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fer checkpoint (written by fer-train)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['format_version']} is newer than this package supports")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes, weights loaded, in eval mode."""
    from fer_train.models import build_model

    model = build_model(ckpt["arch"], **ckpt["arch_args"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
