"""Self-describing checkpoints, written atomically.

A checkpoint is one ``torch.save`` file holding everything needed to rebuild and
describe the model (architecture name and arguments, weights, labels, preprocessing
config, training config, epoch, metrics, data description); ``last.pt`` also holds the
optimizer and scheduler state for ``--resume``. Only tensors, dicts, lists and plain
values are stored, so loading uses ``weights_only=True`` (no pickled code runs).

On disk a checkpoint is a flat dict (``format``, ``format_version`` and the keys below), which
``fer-export`` and ``fer-bench`` read through :func:`load_checkpoint`. The training side reads and
writes it as a typed :class:`Checkpoint`, assembled in one place (``fer_train.engine``) and
converted with :meth:`Checkpoint.to_payload` / :meth:`Checkpoint.from_payload`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

FORMAT = "fer-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "arch", "arch_args", "state_dict", "labels", "preprocess")


class CheckpointError(ValueError):
    """The file is missing, truncated or not a fer checkpoint."""


@dataclass
class ResumeState:
    """What ``last.pt`` holds beyond a model checkpoint so that ``--resume`` continues exactly."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    history: list[dict[str, float]]
    best_val_acc: float
    best_epoch: int
    swa_state_dict: dict[str, torch.Tensor] | None = None  # the running weight average, once it has members
    swa_n: int = 0


@dataclass
class Checkpoint:
    """One fer-train checkpoint. Descriptions of data, metrics and configs stay plain dicts: they are
    written to JSON and ONNX metadata as they are."""

    arch: str
    arch_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    labels: list[str]
    preprocess: dict[str, Any]
    train_config: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    num_parameters: int | None = None
    teacher: list[dict[str, Any]] | dict[str, Any] | None = None  # older checkpoints: one dict
    init_from: dict[str, Any] | None = None
    torch_version: str | None = None
    temperature: float | None = None  # fitted (or inherited) at the end of the run
    resume: ResumeState | None = None  # last.pt only
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    # --- derived answers, so that no caller digs in the dicts ---

    @property
    def trained_on_val(self) -> bool:
        """Whether it trained on its validation faces (``--train-on-val``)."""
        return bool(self.train_config.get("train_on_val", False))

    @property
    def split(self) -> tuple[float, int]:
        """(val_fraction, split_seed) of its validation split; older checkpoints used the defaults."""
        return self.train_config.get("val_fraction", 0.1), self.train_config.get("split_seed", 0)

    @property
    def data_sha256(self) -> str | None:
        return self.data.get("sha256")

    @property
    def teachers(self) -> list[dict[str, Any]]:
        """The teachers it distilled from (an older checkpoint's single dict as a list of one)."""
        if self.teacher is None:
            return []
        return [self.teacher] if isinstance(self.teacher, dict) else list(self.teacher)

    @property
    def val_accuracy(self) -> float | None:
        """The held-out validation accuracy of the final evaluation (None before it, or after --train-on-val)."""
        return self.metrics.get("val", {}).get("accuracy")

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test", {}).get("accuracy")

    # --- on-disk form ---

    def to_payload(self) -> dict[str, Any]:
        """The flat dict :func:`save_checkpoint` writes (the keys and order fer-train has always written)."""
        payload: dict[str, Any] = {
            "arch": self.arch, "arch_args": self.arch_args, "state_dict": self.state_dict, "labels": self.labels,
            "preprocess": self.preprocess, "train_config": self.train_config, "epoch": self.epoch,
            "metrics": self.metrics, "data": self.data, "num_parameters": self.num_parameters,
            "teacher": self.teacher, "init_from": self.init_from, "torch_version": self.torch_version,
        }
        if self.resume is not None:
            r = self.resume
            payload.update({"swa_state_dict": r.swa_state_dict, "swa_n": r.swa_n, "optimizer": r.optimizer,
                            "scheduler": r.scheduler, "scaler": r.scaler, "history": r.history,
                            "best_val_acc": r.best_val_acc, "best_epoch": r.best_epoch})
        if self.temperature is not None:
            payload["temperature"] = self.temperature
        return {**payload, **self.extra}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | Path = "checkpoint") -> Checkpoint:
        """The typed form of a loaded checkpoint dict (as :func:`load_checkpoint` returns it)."""
        _check_format(payload, source)
        own = {f.name for f in fields(cls)} - {"resume", "extra"}
        resume_keys = {f.name for f in fields(ResumeState)}
        resume = None
        if "optimizer" in payload:
            resume = ResumeState(**{k: payload[k] for k in resume_keys if k in payload})
        extra = {k: v for k, v in payload.items() if k not in own | resume_keys | {"format", "format_version"}}
        return cls(**{k: payload[k] for k in own if k in payload}, resume=resume, extra=extra)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        return cls.from_payload(load_checkpoint(path, map_location), path)

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, self.to_payload())

    def model(self) -> torch.nn.Module:
        """The model it describes, weights loaded, in eval mode."""
        from fer_train.models import build_model

        model = build_model(self.arch, **self.arch_args)
        model.load_state_dict(self.state_dict)
        return model.eval()


def _check_format(ckpt: Any, source: str | Path) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not a fer checkpoint (written by fer-train)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{source}: checkpoint lacks {', '.join(missing)}")
    if not isinstance(ckpt["format_version"], int) or ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{source}: checkpoint format {ckpt['format_version']} is newer than this package "
                              f"supports ({FORMAT_VERSION}); upgrade fer-edge to read it")


def save_checkpoint(path: str | Path, payload: dict[str, Any] | Checkpoint) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    if isinstance(payload, Checkpoint):
        payload = payload.to_payload()
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
    """Load and validate a checkpoint as its flat dict (what fer-export and fer-bench read); raises
    :class:`CheckpointError` with a reason. :meth:`Checkpoint.load` gives the typed form."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}); is it truncated, or not written by fer-train?"
        ) from exc
    _check_format(ckpt, path)
    return ckpt


def as_checkpoint(ckpt: dict[str, Any] | Checkpoint) -> Checkpoint:
    """The typed form of a checkpoint given either way (a dict as :func:`load_checkpoint` returns it)."""
    return ckpt if isinstance(ckpt, Checkpoint) else Checkpoint.from_payload(ckpt)


def model_from_checkpoint(ckpt: dict[str, Any] | Checkpoint) -> torch.nn.Module:
    """Rebuild the model a checkpoint (dict or :class:`Checkpoint`) describes, weights loaded, in eval mode."""
    return as_checkpoint(ckpt).model()
