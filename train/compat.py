"""Checkpoint compatibility: may this checkpoint resume, teach, initialise or give its temperature to
this run, and may these checkpoints be evaluated on their validation split?

Every such answer lives here. A check returns nothing (or the one value its caller needs) and raises
:class:`CompatibilityError` with one message style, ``<role> <path>: <what differs>; <what to do>``,
so the CLIs print it as one line.

The reasons are two. Mechanics: weights fit only their architecture, preprocessing and labels, and an
optimizer state only the recipe it was made with. Honest figures: a checkpoint that trained on this
run's validation faces (other data, another split, or ``--train-on-val``) must not reach a run whose
validation figures select its model, as weights, as a teacher or as a temperature.
"""

from __future__ import annotations

import logging
from typing import Any

from fer_runtime import LABELS
from fer_train.checkpoint import Checkpoint, CheckpointError

log = logging.getLogger(__name__)

# Options a resumed run must keep: the optimizer state carries them, they define the validation split,
# or they define what the saved weight average is made of. (init_from is not among them: a resumed run
# never reads it again, and last.pt records the sha256 of the weights it started from.)
FROZEN_ON_RESUME = frozenset({"optimizer", "lr", "weight_decay", "momentum", "val_fraction", "split_seed", "limit",
                              "preprocess", "train_on_val", "swa_start", "swa_lr"})
# Options that change where files go or what is shown, never what is trained.
_NOT_RECIPE = ("out_dir", "progress")


class CompatibilityError(CheckpointError):
    """A readable checkpoint that this run may not use in the role it was given."""


def _refuse(role: str, path: Any, problem: str, remedy: str | None = None) -> CompatibilityError:
    return CompatibilityError(f"{role} {path}: {problem}" + (f"; {remedy}" if remedy else ""))


def same_split(ckpt: Checkpoint, cfg: Any, data_sha256: str) -> bool:
    """Whether ``ckpt`` trained on this run's data with this run's validation split."""
    return ckpt.data_sha256 == data_sha256 and ckpt.split == (cfg.val_fraction, cfg.split_seed)


def _refuse_val_trained(role: str, path: Any, ckpt: Checkpoint, cfg: Any, consequence: str) -> None:
    if ckpt.trained_on_val and not cfg.train_on_val:
        raise _refuse(role, path, f"trained on the validation faces (--train-on-val): {consequence}",
                      "only another --train-on-val run may use it")


def check_init(ckpt: Checkpoint, path: Any, cfg: Any, arch_args: dict[str, Any], data_sha256: str) -> None:
    """``--init-from``: the same architecture, preprocessing and labels (or the weights do not fit), and
    the same data and validation split (weights that trained on this run's validation faces would make
    its validation figures worthless)."""
    if ckpt.arch != cfg.arch or ckpt.arch_args != arch_args:
        raise _refuse("--init-from", path, f"is {ckpt.arch} {ckpt.arch_args}, not {cfg.arch} {arch_args}")
    if ckpt.preprocess != cfg.preprocess.to_dict() or tuple(ckpt.labels) != tuple(LABELS):
        raise _refuse("--init-from", path, "was trained with other preprocessing or labels")
    if not same_split(ckpt, cfg, data_sha256):
        raise _refuse("--init-from", path, "was trained on other data or another validation split: "
                      "its training faces may include this run's validation faces")
    _refuse_val_trained("--init-from", path, ckpt, cfg, "this run's validation figures would be worthless")


def check_teacher(ckpt: Checkpoint, path: Any, cfg: Any) -> None:
    """``--teacher``: the student's labels and preprocessing (it sees the same faces), and validation
    faces it never trained on."""
    if tuple(ckpt.labels) != tuple(LABELS):
        raise _refuse("teacher", path, f"predicts {ckpt.labels}, not {list(LABELS)}")
    if ckpt.preprocess != cfg.preprocess.to_dict():
        raise _refuse("teacher", path, f"expects preprocessing {ckpt.preprocess}, the student {cfg.preprocess.to_dict()}")
    _refuse_val_trained("teacher", path, ckpt, cfg, "what it learnt of them would leak into this run's validation figures")


def check_temperature_source(ckpt: Checkpoint, path: Any, cfg: Any, arch_args: dict[str, Any],
                             data_sha256: str) -> None:
    """``--temperature-of``: a finished run that held validation out, with this run's recipe basics."""
    if ckpt.trained_on_val or ckpt.temperature is None:
        raise _refuse("--temperature-of", path, "not a temperature fitted on held-out validation faces",
                      "give a finished run that did not train on them")
    if ((ckpt.arch, ckpt.arch_args) != (cfg.arch, arch_args) or ckpt.preprocess != cfg.preprocess.to_dict()
            or not same_split(ckpt, cfg, data_sha256)):
        raise _refuse("--temperature-of", path, "another architecture, preprocessing, data or validation split",
                      "it must be the run this one refits")


def check_resume(state: Checkpoint, path: Any, cfg: Any, arch_args: dict[str, Any], data_desc: dict[str, Any],
                 teachers: list[dict[str, Any]] | None) -> dict[str, tuple[Any, Any]]:
    """``--resume`` from ``state`` (last.pt): refuses what it could not honour and returns the recipe
    changes it allows (option -> (new, old)), e.g. more epochs."""
    from fer_train.engine import TrainConfig, as_teacher_list

    if state.resume is None:
        raise _refuse("--resume", path, "holds no training state (optimizer, schedule, history)",
                      "resume from a last.pt written by fer-train, or use a new --out-dir")
    if state.arch != cfg.arch or state.arch_args != arch_args:
        raise _refuse("--resume", path, f"was trained as {state.arch} {state.arch_args}, not {cfg.arch} {arch_args}",
                      "use a new --out-dir")
    if state.data_sha256 != data_desc["sha256"]:
        raise _refuse("--resume", path, f"was trained on other data ({state.data.get('source')})", "use a new --out-dir")
    # A teacher file replaced in place (e.g. a bundled model re-shipped) would silently teach the
    # rest of the run something else: refuse. A teacher passed by another path is a visible change.
    for was, now in zip(state.teachers, teachers or []):
        if was["path"] == now["path"] and was["sha256"] != now["sha256"]:
            raise _refuse("teacher", now["path"], f"has changed since {path} was written (sha256 "
                          f"{was['sha256'][:12]}... -> {now['sha256'][:12]}...)",
                          "pass the original file, e.g. the copy ship_model.py --keep-old made")
    # Keys that an older checkpoint lacks count as their defaults (the behaviour it was trained with).
    before = {**TrainConfig(arch=cfg.arch).to_dict(), **state.train_config}
    before["teacher"] = as_teacher_list(before["teacher"])  # older checkpoints store one path
    changed = {k: (v, before[k]) for k, v in cfg.to_dict().items() if k not in _NOT_RECIPE and before[k] != v}
    frozen = sorted(set(changed) & FROZEN_ON_RESUME)
    if frozen:  # these would be ignored (optimizer state) or would change the validation faces
        raise _refuse("--resume", path, f"cannot change {', '.join(frozen)} when resuming "
                      f"({'; '.join(f'{k} {changed[k][1]!r} -> {changed[k][0]!r}' for k in frozen)})",
                      "use a new --out-dir")
    if cfg.epochs < state.epoch:
        raise _refuse("--resume", path, f"has already trained {state.epoch} epochs; --epochs {cfg.epochs} is fewer")
    return changed


def validation_split_of(ckpts: list[Checkpoint], paths: list[Any]) -> tuple[float, int]:
    """``fer-eval --split val``: the one (val_fraction, split_seed) all ``ckpts`` held out."""
    for ckpt, path in zip(ckpts, paths, strict=True):
        if ckpt.trained_on_val:
            raise _refuse("fer-eval", path, "trained on the validation faces (--train-on-val): its validation "
                          "figures are not held-out ones", "evaluate it on PublicTest")
    splits = {c.split for c in ckpts}
    if len(splits) > 1:
        raise _refuse("fer-eval", " + ".join(map(str, paths)), "the checkpoints were validated on different "
                      f"splits (val_fraction, split_seed): {sorted(splits)}", "evaluate them on PublicTest")
    return splits.pop()


def trained_on(ckpts: list[Checkpoint], data_sha256: str) -> bool:
    """Whether any of ``ckpts`` trained on the data with this sha256 (its Training split is no test)."""
    return any(c.data_sha256 == data_sha256 for c in ckpts)
