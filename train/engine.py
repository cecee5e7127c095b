"""The training loop: a typed config, self-describing checkpoints, and ``train`` as five named steps:
``build_run`` (data, model, teacher, optimizer), ``restore_state`` (last.pt, --init-from or nothing),
``train_one_epoch`` and ``end_of_epoch`` (schedule, weight average, validation, checkpoints) for each
epoch, and ``finish`` (the final evaluation, written into best.pt once). Whether another checkpoint may
resume, teach, initialise or lend its temperature to a run is decided in ``fer_train.compat``.

Determinism and resume: shuffling, augmentation and dropout are reseeded from
``(seed, epoch)`` at the start of every epoch, and ``last.pt`` (written atomically after
each completed epoch) holds model, optimizer and scheduler state (with weight averaging, also
the running average: ``swa_state_dict``, ``swa_n``; its ``state_dict`` stays the running
weights, and ``best.pt`` holds the best average on validation). A run killed at any
moment and resumed with ``--resume`` therefore redoes the interrupted epoch exactly as
an uninterrupted run would have, and finishes with the same weights.

Distributed: under ``torchrun --nproc-per-node=N`` the same function runs one process
per worker with DistributedDataParallel (gloo on CPU, NCCL on CUDA) and a
DistributedSampler; ``--batch-size`` stays the global batch. Rank 0 writes all files.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from fer_runtime import LABELS, PreprocessConfig, preprocess
from fer_train import compat
from fer_train.augment import AugmentConfig, augment
from fer_train.checkpoint import Checkpoint, ResumeState, save_checkpoint
from fer_train.choices import CLASS_WEIGHTS, DEVICES, OPTIMIZERS, PRECISIONS, SCHEDULERS
from fer_train.data import Splits, load_fer2013, make_splits, stratified_subset
from fer_train.models import arch_args, build_model, count_parameters, describe, predict_logits

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    arch: str = "seed"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"
    warmup_epochs: int = 0  # linear warm-up before the cosine decay
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of image pairs; 0 = off
    class_weights: str = "none"  # loss weights: balanced = 1/frequency, sqrt = its square root
    soft_labels: float = 0.0  # weight of the FER+ vote distribution in the training target; 0 = one-hot labels
    ferplus: str | None = None  # FER+ vote file; None = found next to the data (fer_train.ferplus.find_ferplus)
    # Knowledge distillation from these fer-train checkpoints (several: their mean logits teach); None = off.
    teacher: list[str] | None = None
    distill: float = 0.5  # weight of the distillation term when a teacher is set (the rest is cross-entropy)
    distill_temperature: float = 4.0  # softmax temperature of teacher and student in the distillation term
    # Start from this fer-train checkpoint's weights (same architecture) instead of a random init: fine-tuning.
    init_from: str | None = None
    # Stochastic weight averaging (Izmailov et al. 2018): from this 1-based epoch on, the lr stays at swa_lr and
    # the weights at the end of each epoch join an equal-weight average, whose BatchNorm statistics are then
    # recomputed on the training faces; the average is the model validated and saved. None = off.
    swa_start: int | None = None
    swa_lr: float | None = None  # the constant lr of the averaging phase; None = lr / 5
    data: str | None = None
    out_dir: str = "runs/seed"
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast + channels_last on CPUs with bf16 units, AMP on CUDA
    seed: int = 0
    val_fraction: float = 0.1
    split_seed: int = 0  # fixed, so every run validates on the same faces
    # The final fit: train on the validation faces too, once a recipe has been chosen on them. Nothing is
    # selected then (best.pt is the last epoch's model, the average when SWA is on), the validation figures
    # are on faces the model trained on and are labelled so, and the softmax temperature comes from
    # temperature_of, else init_from (fitted on validation while those faces were held out), else stays 1.
    train_on_val: bool = False
    temperature_of: str | None = None  # with train_on_val: e.g. the twin run that held validation out
    limit: int | None = None  # train on a stratified subset of this size (smoke runs, tests)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        from fer_train.models import check_architecture

        check_architecture(self.arch)
        for name, value, valid in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("scheduler", self.scheduler, SCHEDULERS),
            ("device", self.device, DEVICES),
            ("precision", self.precision, PRECISIONS),
            ("class_weights", self.class_weights, CLASS_WEIGHTS),
        ):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("epochs must be >= 1, batch_size >= 2 and lr > 0")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError("warmup_epochs must be in [0, epochs)")
        if self.mixup < 0:
            raise ValueError("mixup alpha must be >= 0")
        if not 0 <= self.soft_labels <= 1:
            raise ValueError("soft_labels must be in [0, 1]")
        self.teacher = as_teacher_list(self.teacher)
        if not 0 < self.distill <= 1:
            raise ValueError(f"distill must be in (0, 1], got {self.distill}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if self.temperature_of is not None and not self.train_on_val:
            raise ValueError("temperature_of is for train_on_val runs (others fit it on validation)")
        if self.swa_start is None and self.swa_lr is not None:
            raise ValueError("swa_lr is the lr of the averaging phase: it needs swa_start")
        if self.swa_start is not None:
            if not 1 <= self.swa_start <= self.epochs:
                raise ValueError(f"swa_start must be an epoch in [1, {self.epochs}], got {self.swa_start}")
            if self.warmup_epochs > self.swa_start - 1:
                raise ValueError("warmup_epochs must end before swa_start")
            if self.swa_lr is None:
                self.swa_lr = self.lr / 5
            if not 0 < self.swa_lr <= self.lr:
                raise ValueError(f"swa_lr must be in (0, lr = {self.lr}], got {self.swa_lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_val_acc: float
    history: list[dict[str, float]]
    test_metrics: dict[str, Any] | None


def as_teacher_list(teacher: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """One checkpoint path (as older checkpoints store it) or several, as a list; empty = None."""
    if teacher is None or isinstance(teacher, str):
        return [teacher] if teacher else None
    return [str(t) for t in teacher] or None


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class Runtime:
    """Where and how this process trains."""

    device: torch.device
    rank: int
    world: int
    autocast_dtype: torch.dtype | None
    channels_last: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def setup_runtime(cfg: TrainConfig) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA device; use --device cpu or auto")
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    precision = cfg.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for CUDA; on CPU use --precision bf16 or fp32")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    # channels_last pays off with bf16 oneDNN kernels on CPU and with tensor cores on CUDA.
    return Runtime(device, rank, world, dtype, channels_last=dtype is not None)


def _batches(indices: list[int], batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        if len(chunk) >= 2:  # BatchNorm needs two samples; a lone leftover waits for the next epoch
            yield torch.tensor(chunk)


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True)
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def in_swa_phase(cfg: TrainConfig, epoch: int) -> bool:
    """Whether ``epoch`` (0-based) is one whose end weights join the stochastic weight average."""
    return cfg.swa_start is not None and epoch + 1 >= cfg.swa_start


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for ``epoch`` (0-based): linear warm-up, then cosine to zero; with SWA,
    the cosine ends at swa_lr when averaging starts and the lr stays there."""
    floor, end = 0.0, cfg.epochs
    if cfg.swa_start is not None:
        floor, end = cfg.swa_lr / cfg.lr, cfg.swa_start - 1
        if in_swa_phase(cfg, epoch):
            return floor
    if cfg.scheduler == "none":
        return 1.0
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    span = end - cfg.warmup_epochs
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(cfg, epoch))


def class_weights(cfg: TrainConfig, labels: torch.Tensor) -> torch.Tensor | None:
    """Cross-entropy weights from the training label counts (mean weight 1), or None."""
    if cfg.class_weights == "none":
        return None
    counts = torch.bincount(labels, minlength=len(LABELS)).clamp(min=1).double()
    w = counts.sum() / counts
    if cfg.class_weights == "sqrt":
        w = w.sqrt()
    return (w / (w * counts).sum() * counts.sum()).float()


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rt: Runtime) -> tuple[float, float]:
    """fp32 loss and accuracy on (x, y), sharded over ranks and summed."""
    shard = slice(rt.rank, None, rt.world)
    logits = predict_logits(model, x[shard])
    loss_sum = F.cross_entropy(logits, y[shard], reduction="sum")
    correct = (logits.argmax(1) == y[shard]).sum().float()
    totals = torch.stack([loss_sum, correct, torch.tensor(float(len(y[shard])))])
    if rt.world > 1:
        totals = totals.to(rt.device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])



@torch.no_grad()
def swa_update(average: nn.Module, model: nn.Module, n_averaged: int) -> None:
    """Fold ``model``'s parameters into ``average``, the running mean of ``n_averaged`` earlier weights."""
    for p_avg, p in zip(average.parameters(), model.parameters(), strict=True):
        p_avg.copy_(p) if n_averaged == 0 else p_avg.add_((p.detach() - p_avg) / (n_averaged + 1))


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: torch.Tensor, rt: Runtime, batch_size: int = 512) -> None:
    """Replace every BatchNorm's running statistics by their average over ``x`` (the training faces,
    unaugmented): averaged weights never produced the old statistics. Each batch's statistics count in
    proportion to its size, so the running mean is exactly the mean over ``x``. The forward passes run
    at the training precision (autocast), as the statistics of ordinary training are gathered, with
    everything but the BatchNorm layers in eval mode (no dropout). Under DDP every rank does the whole
    pass, so all ranks hold the same statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
    was_training = model.training
    model.eval()
    for m in norms:
        m.train()
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(rt.device)
        for m in norms:  # running = (seen * running + n * batch) / (seen + n)
            m.momentum = len(xb) / (start + len(xb))
        if rt.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with rt.autocast():
            model(xb)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s KL(teacher || student) on temperature-softened logits, times T^2 so that its
    gradients keep their scale as T changes."""
    return F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    log_target=True, reduction="batchmean") * temperature**2


class LogitMean(nn.Module):
    """An ensemble teacher: the mean of its members' logits (one member: that member's logits)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(0)


def load_teacher(cfg: TrainConfig, rt: Runtime) -> tuple[nn.Module | None, list[dict[str, Any]] | None]:
    """The frozen teacher (eval mode, on the training device: the mean of the logits of every
    ``cfg.teacher`` checkpoint) and a description of each checkpoint for the student's checkpoint."""
    if not cfg.teacher:
        return None, None
    from fer_train.data import file_sha256

    members, descs = [], []
    for path in cfg.teacher:
        ckpt = Checkpoint.load(path)
        compat.check_teacher(ckpt, path, cfg)
        members.append(ckpt.model())
        descs.append({"path": str(path), "sha256": file_sha256(Path(path)), "arch": ckpt.arch,
                      "test_accuracy": ckpt.test_accuracy})
    teacher = LogitMean(members).to(rt.device).eval()
    if rt.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    if rt.main:
        log.info("distilling from %s, weight %.2f, temperature %.1f",
                 " + ".join(f"{d['path']} ({d['arch']})" for d in descs), cfg.distill, cfg.distill_temperature)
    return teacher, descs


def init_weights(cfg: TrainConfig, model: nn.Module, arch_args: dict[str, Any], data_desc: dict[str, Any]) -> dict[str, Any]:
    """Load ``cfg.init_from``'s weights into ``model`` (if :func:`fer_train.compat.check_init` allows);
    returns a description for the new checkpoint."""
    from fer_train.data import file_sha256

    ckpt = Checkpoint.load(cfg.init_from)
    compat.check_init(ckpt, cfg.init_from, cfg, arch_args, data_desc["sha256"])
    model.load_state_dict(ckpt.state_dict)
    log.info("starting from the weights of %s (epoch %s)", cfg.init_from, ckpt.epoch)
    return {"path": str(cfg.init_from), "sha256": file_sha256(Path(cfg.init_from)), "arch": ckpt.arch,
            "epoch": ckpt.epoch, "val_acc": ckpt.metrics.get("val_acc"), "temperature": ckpt.temperature}


def inherited_temperature(cfg: TrainConfig, init_desc: dict[str, Any] | None, arch_args: dict[str, Any],
                          data_desc: dict[str, Any]) -> dict[str, Any]:
    """The temperature a --train-on-val run inherits and where it comes from: --temperature-of (whose
    validation accuracy is recorded too: the same recipe's, validation held out), else --init-from."""
    from fer_train.data import file_sha256

    if cfg.temperature_of:
        ckpt = Checkpoint.load(cfg.temperature_of)
        compat.check_temperature_source(ckpt, cfg.temperature_of, cfg, arch_args, data_desc["sha256"])
        return {"temperature": float(ckpt.temperature), "temperature_from": cfg.temperature_of,
                "temperature_from_sha256": file_sha256(Path(cfg.temperature_of)),
                "recipe_val_accuracy": ckpt.val_accuracy}
    if init_desc and init_desc.get("temperature"):
        return {"temperature": float(init_desc["temperature"]), "temperature_from": init_desc["path"],
                "temperature_from_sha256": init_desc["sha256"]}
    log.warning("--train-on-val without --temperature-of or a calibrated --init-from: the temperature stays 1 "
                "(uncalibrated probabilities)")
    return {"temperature": 1.0, "temperature_from": None}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _write_history(out: Path, history: list[dict[str, float]]) -> None:
    tmp = out / ".metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, out / "metrics.csv")
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(history, indent=1))
    os.replace(tmp, out / "metrics.json")


def load_splits(cfg: TrainConfig) -> Splits:
    data = load_fer2013(cfg.data)
    soft_source = None
    if cfg.soft_labels > 0:
        from fer_train.ferplus import attach_soft_targets, resolve_ferplus

        soft_source = resolve_ferplus(cfg.ferplus, data.source)
        data = attach_soft_targets(data, soft_source, cfg.soft_labels)
    splits = make_splits(data, cfg.val_fraction, cfg.split_seed)
    splits.soft_source = str(soft_source) if soft_source else None
    if cfg.train_on_val:
        splits.train, splits.val_in_train = splits.train.concat(splits.val), True
    if cfg.limit is not None and cfg.limit < len(splits.train):
        splits.train = splits.train.subset(stratified_subset(splits.train.labels, cfg.limit, cfg.split_seed))
    return splits


# --- the run: built once, then restored, trained epoch by epoch and finished ---


@dataclass
class Run:
    """What one training run is made of; built once by :func:`build_run`, never replaced."""

    cfg: TrainConfig
    rt: Runtime
    out: Path
    splits: Splits
    data_desc: dict[str, Any]
    x_train: torch.Tensor
    y_train: torch.Tensor
    t_train: torch.Tensor  # loss targets: class indices, or (N, 7) distributions with FER+ soft labels
    x_val: torch.Tensor
    y_val: torch.Tensor
    arch_args: dict[str, Any]
    model: nn.Module
    swa_model: nn.Module | None  # the running weight average (SWA only)
    teacher: nn.Module | None
    teacher_desc: list[dict[str, Any]] | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_weights: torch.Tensor | None

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


@dataclass
class RunState:
    """What changes from epoch to epoch: what last.pt saves and ``--resume`` restores."""

    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float = -1.0
    best_epoch: int = 0
    swa_n: int = 0  # epochs in the weight average
    init_desc: dict[str, Any] | None = None  # the --init-from checkpoint this run started from


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train ``cfg.arch``; files go to ``cfg.out_dir`` (checkpoints, metrics, plots)."""
    run = build_run(cfg)
    state = restore_state(run, resume)
    # Read (and checked) now rather than after the last epoch.
    inherited = inherited_temperature(cfg, state.init_desc, run.arch_args, run.data_desc) if cfg.train_on_val else None
    net = _distributed(run)  # after restoring: DDP broadcasts rank 0's weights when it wraps them
    for epoch in range(state.start_epoch, cfg.epochs):
        train_stats = train_one_epoch(run, net, epoch)
        end_of_epoch(run, state, epoch, train_stats)
    if run.rt.world > 1:
        dist.barrier()
    test_metrics = finish(run, inherited) if run.rt.main else None
    if run.rt.world > 1:
        dist.destroy_process_group()
    return TrainResult(run.out, state.best_epoch, state.best_val_acc, state.history, test_metrics)


def build_run(cfg: TrainConfig) -> Run:
    """Runtime, data, model (randomly initialised from ``cfg.seed``), teacher, optimizer and schedule."""
    rt = setup_runtime(cfg)
    out = Path(cfg.out_dir)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    splits = load_splits(cfg)
    pcfg = cfg.preprocess
    y_train = torch.from_numpy(splits.train.labels)
    args = arch_args(cfg.arch)
    if "input_size" in args:
        args["input_size"] = pcfg.size
    model = build_model(cfg.arch, **args).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    teacher, teacher_desc = load_teacher(cfg, rt)
    optimizer = _make_optimizer(cfg, model)
    weights = class_weights(cfg, y_train)
    run = Run(
        cfg=cfg, rt=rt, out=out, splits=splits, data_desc=splits.describe(),
        x_train=torch.from_numpy(preprocess(splits.train.images, pcfg)), y_train=y_train,
        t_train=torch.from_numpy(splits.train.soft) if splits.train.soft is not None else y_train,
        x_val=torch.from_numpy(preprocess(splits.val.images, pcfg)), y_val=torch.from_numpy(splits.val.labels),
        arch_args=args, model=model, swa_model=copy.deepcopy(model) if cfg.swa_start is not None else None,
        teacher=teacher, teacher_desc=teacher_desc, optimizer=optimizer, scheduler=_make_scheduler(cfg, optimizer),
        scaler=torch.amp.GradScaler(enabled=rt.autocast_dtype == torch.float16),
        loss_weights=weights.to(rt.device) if weights is not None else None,
    )
    if rt.main:
        log.info("%s:\n%s", cfg.arch, describe(model))
        log.info("%s: %s parameters; train %d, val %d; device %s, world %d, autocast %s, channels_last %s",
                 cfg.arch, f"{count_parameters(model):,}", len(run.y_train), len(run.y_val), rt.device, rt.world,
                 rt.autocast_dtype, rt.channels_last)
    return run


def restore_state(run: Run, resume: bool) -> RunState:
    """With ``resume`` and a last.pt: its weights, optimizer, schedule, average and history. Otherwise a
    fresh start, from ``--init-from``'s weights when given."""
    if resume and run.last_path.exists():
        return _resume(run)
    if resume and run.rt.main:
        log.info("no %s yet: starting from scratch", run.last_path)
    init_desc = init_weights(run.cfg, run.model, run.arch_args, run.data_desc) if run.cfg.init_from else None
    return RunState(init_desc=init_desc)


def _resume(run: Run) -> RunState:
    cfg, rt = run.cfg, run.rt
    last = Checkpoint.load(run.last_path, map_location=rt.device)
    changed = compat.check_resume(last, run.last_path, cfg, run.arch_args, run.data_desc, run.teacher_desc)
    saved = last.resume
    run.model.load_state_dict(last.state_dict)
    run.optimizer.load_state_dict(saved.optimizer)
    run.scheduler.load_state_dict(saved.scheduler)
    run.scaler.load_state_dict(saved.scaler)
    state = RunState(start_epoch=last.epoch, history=saved.history, best_val_acc=saved.best_val_acc,
                     best_epoch=saved.best_epoch, init_desc=last.init_from)
    if run.swa_model is not None and saved.swa_state_dict is not None:
        run.swa_model.load_state_dict(saved.swa_state_dict)
        state.swa_n = saved.swa_n
    # The optimizer holds the lr the old schedule set for the next epoch; recompute it from this
    # config so that a finished run resumed with a larger --epochs continues on the stretched
    # cosine (a warm restart) instead of spending an epoch at the old schedule's final lr of 0.
    for group, base_lr in zip(run.optimizer.param_groups, run.scheduler.base_lrs, strict=True):
        group["lr"] = base_lr * lr_factor(cfg, state.start_epoch)
    if rt.main:
        if changed:  # allowed (e.g. extending a run), but never silent
            log.warning("resuming with a changed recipe: %s",
                        "; ".join(f"{k} {old!r} -> {new!r}" for k, (new, old) in changed.items()))
        old_epochs = last.train_config["epochs"]
        log.info("resuming %s after epoch %d%s", run.last_path, state.start_epoch,
                 f" (schedule stretched from {old_epochs} to {cfg.epochs} epochs)" if old_epochs != cfg.epochs else "")
    return state


def _distributed(run: Run) -> nn.Module:
    if run.rt.world == 1:
        return run.model
    return nn.parallel.DistributedDataParallel(run.model,
                                               device_ids=[run.rt.device.index] if run.rt.device.type == "cuda" else None)


def train_one_epoch(run: Run, net: nn.Module, epoch: int) -> dict[str, float]:
    """One pass over the training faces (this rank's share); returns its loss, accuracy, image count
    and seconds, the first three summed over ranks."""
    cfg, rt = run.cfg, run.rt
    # Everything random in this epoch derives from (seed, epoch): that is what makes resume exact.
    sampler = DistributedSampler(range(len(run.y_train)), num_replicas=rt.world, rank=rt.rank, shuffle=True,
                                 seed=cfg.seed)
    sampler.set_epoch(epoch)
    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rt.rank)
    aug_gen = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch * 31 + rt.rank)
    mix_rng = np.random.default_rng([cfg.seed, epoch, rt.rank])
    net.train()
    batches = list(_batches(list(sampler), max(2, cfg.batch_size // rt.world)))
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = seen = 0
    t0 = time.perf_counter()
    bar = _progress(batches, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and rt.main)
    for idx in bar:
        loss, right = _train_step(run, net, idx, aug_gen, mix_rng)
        loss_sum += loss.detach().double().cpu() * len(idx)
        correct += right
        seen += len(idx)
        if hasattr(bar, "set_postfix"):
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen * rt.world / elapsed:.0f}")
    seconds = time.perf_counter() - t0
    totals = torch.tensor([float(loss_sum), float(correct), float(seen)], dtype=torch.float64)
    if rt.world > 1:
        dist.all_reduce(totals)
    return {"train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
            "images": float(totals[2]), "seconds": seconds}


def _train_step(run: Run, net: nn.Module, idx: torch.Tensor, aug_gen: torch.Generator,
                mix_rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """One optimizer step on the faces ``idx``; returns the loss and how many it classified right."""
    cfg, rt = run.cfg, run.rt
    xb = augment(run.x_train[idx], cfg.augment, aug_gen).to(rt.device, non_blocking=True)
    yb = run.y_train[idx].to(rt.device, non_blocking=True)
    tb = run.t_train[idx].to(rt.device, non_blocking=True)
    if rt.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    lam, partner = 1.0, None
    if cfg.mixup > 0:  # mix each image with another of the batch; the loss mixes the labels alike
        lam = float(mix_rng.beta(cfg.mixup, cfg.mixup))
        partner = torch.randperm(len(idx), generator=aug_gen).to(rt.device)
        xb = lam * xb + (1 - lam) * xb[partner]
    with rt.autocast():
        logits = net(xb)
        loss = F.cross_entropy(logits.float(), tb, weight=run.loss_weights, label_smoothing=cfg.label_smoothing)
        if partner is not None:
            loss = lam * loss + (1 - lam) * F.cross_entropy(
                logits.float(), tb[partner], weight=run.loss_weights, label_smoothing=cfg.label_smoothing)
        if run.teacher is not None:  # the teacher sees the same augmented (and mixed) faces
            with torch.no_grad():
                t_logits = run.teacher(xb).float()
            loss = (1 - cfg.distill) * loss + cfg.distill * distillation_loss(
                logits.float(), t_logits, cfg.distill_temperature)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss, int((logits.argmax(1) == yb).sum())


def end_of_epoch(run: Run, state: RunState, epoch: int, train_stats: dict[str, float]) -> None:
    """Step the schedule, fold the weights into the average (SWA), validate, and (rank 0) save
    best.pt when validation improved (every epoch of a final fit), last.pt, the history and the curves."""
    cfg, rt = run.cfg, run.rt
    run.scheduler.step()
    candidate = run.model  # the weights this epoch offers as best.pt: the running ones, or the SWA average
    if run.swa_model is not None and in_swa_phase(cfg, epoch):
        swa_update(run.swa_model, run.model, state.swa_n)
        state.swa_n += 1
        recompute_batchnorm(run.swa_model, run.x_train, rt)
        candidate = run.swa_model
    val_loss, val_acc = _evaluate(candidate, run.x_val, run.y_val, rt)
    row = {"epoch": epoch + 1, "train_loss": train_stats["train_loss"], "train_acc": train_stats["train_acc"],
           "val_loss": val_loss, "val_acc": val_acc, "lr": run.optimizer.param_groups[0]["lr"],
           "epoch_seconds": train_stats["seconds"], "images_per_second": train_stats["images"] / train_stats["seconds"]}
    if run.swa_model is not None:  # val_* above are the average's in the SWA phase; these the running weights'
        row["swa_models"] = state.swa_n if candidate is run.swa_model else 0
        row["raw_val_acc"] = val_acc if candidate is run.model else _evaluate(run.model, run.x_val, run.y_val, rt)[1]
    state.history.append(row)
    improved = cfg.train_on_val or val_acc > state.best_val_acc  # the final fit selects nothing: the last epoch
    if improved:
        state.best_val_acc, state.best_epoch = val_acc, epoch + 1
    if not rt.main:
        return
    metrics = {"val_acc": val_acc, "val_loss": val_loss, "best_val_acc": state.best_val_acc,
               "best_epoch": state.best_epoch}
    if cfg.train_on_val:
        metrics["val_trained_on"] = True
    if run.swa_model is not None:
        metrics["swa_models"] = row["swa_models"]
    if improved:
        save_checkpoint(run.best_path, _checkpoint(run, state, epoch + 1, metrics, candidate))
    save_checkpoint(run.last_path, _checkpoint(run, state, epoch + 1, metrics, run.model, resumable=True))
    _write_history(run.out, state.history)
    _plot_curves_safely(state.history, run.out / "curves.png", cfg.arch)
    swa_note = (f" (average of {state.swa_n} epochs; running weights {row['raw_val_acc']:.4f})"
                if candidate is run.swa_model else "")
    log.info("epoch %d/%d  train loss %.4f acc %.4f | %s loss %.4f acc %.4f%s%s | %.1fs, %.0f img/s",
             epoch + 1, cfg.epochs, row["train_loss"], row["train_acc"],
             "val (trained on)" if cfg.train_on_val else "val", val_loss, val_acc, swa_note,
             " (best)" if improved and not cfg.train_on_val else "", row["epoch_seconds"], row["images_per_second"])


def _checkpoint(run: Run, state: RunState, epoch: int, metrics: dict[str, Any], weights: nn.Module,
                resumable: bool = False) -> Checkpoint:
    """The one place a checkpoint of this run is assembled: ``weights`` (the running model or the
    average) after ``epoch``; ``resumable`` adds what ``--resume`` needs (last.pt)."""
    saved = None
    if resumable:
        saved = ResumeState(optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                            scaler=run.scaler.state_dict(), history=state.history,
                            best_val_acc=state.best_val_acc, best_epoch=state.best_epoch,
                            swa_state_dict=_cpu_state(run.swa_model) if state.swa_n else None, swa_n=state.swa_n)
    return Checkpoint(
        arch=run.cfg.arch, arch_args=run.arch_args, state_dict=_cpu_state(weights), labels=list(LABELS),
        preprocess=run.cfg.preprocess.to_dict(), train_config=run.cfg.to_dict(), epoch=epoch, metrics=metrics,
        data=run.data_desc, num_parameters=count_parameters(run.model), teacher=run.teacher_desc,
        init_from=state.init_desc, torch_version=str(torch.__version__), resume=saved,
    )


def finish(run: Run, inherited: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Evaluate best.pt once on validation and on PublicTest, fit (or inherit) the softmax temperature,
    and write best.pt a last time with those figures, and final_metrics.json. Returns the test report."""
    best = Checkpoint.load(run.best_path)
    final, temperature, test = _final_evaluation(best, run.splits, run.out, inherited)
    # The epoch's figures, then the final ones (a re-finished run replaces those of its earlier finish).
    metrics = {k: v for k, v in best.metrics.items() if k != "recipe_val_accuracy"} | final
    dataclasses.replace(best, metrics=metrics, temperature=temperature).save(run.best_path)
    (run.out / "final_metrics.json").write_text(json.dumps(metrics, indent=1))
    return test


def _final_evaluation(best: Checkpoint, splits: Splits, out: Path,
                      inherited: dict[str, Any] | None) -> tuple[dict[str, Any], float, dict[str, Any] | None]:
    """(final metrics, temperature, test report) of ``best``, confusion matrices drawn into ``out``.
    After --train-on-val the validation figures are ``val_trained_on`` and the temperature is ``inherited``."""
    from fer_train.calibration import expected_calibration_error, fit_temperature, softmax
    from fer_train.evaluate import checkpoint_logits, evaluate_logits
    from fer_train.plots import plot_confusion

    final: dict[str, Any] = {}
    val_logits, _ = checkpoint_logits(best, splits.val.images)
    val = evaluate_logits(val_logits, splits.val.labels)
    if splits.val_in_train:
        plot_confusion(val["single"]["confusion"], out / "confusion_val.png", "validation (trained on: not held out)")
        final["val_trained_on"] = val["single"]
        # Fitting it on faces the model trained on would make it overconfident: it comes from a
        # checkpoint whose temperature was fitted on them while they were held out.
        calibration: dict[str, Any] = dict(inherited or {"temperature": 1.0, "temperature_from": None})
        recipe_val = calibration.pop("recipe_val_accuracy", None)
        if recipe_val is not None:  # the selection figure of what this run refits
            final["recipe_val_accuracy"] = recipe_val
        temperature = calibration["temperature"]
    else:
        plot_confusion(val["single"]["confusion"], out / "confusion_val.png", "validation (best epoch)")
        final["val"] = val["single"]
        temperature = fit_temperature(val_logits, splits.val.labels)  # validation only: never fitted on test
        calibration = {
            "temperature": temperature,
            "val_ece_before": expected_calibration_error(softmax(val_logits), splits.val.labels),
            "val_ece_after": expected_calibration_error(softmax(val_logits, temperature), splits.val.labels),
        }
    test = None
    if splits.test is not None:
        # Reported, never used for selection: the best epoch was chosen on validation above (or is the last).
        test_logits, mirrored = checkpoint_logits(best, splits.test.images, flip_tta=True)
        test = evaluate_logits(test_logits, splits.test.labels, mirrored)
        plot_confusion(test["single"]["confusion"], out / "confusion_test.png", "PublicTest (best epoch)")
        final["test"] = test["single"]
        final["test_flip_tta"] = test["flip_tta"]
        calibration["test_ece_before"] = expected_calibration_error(softmax(test_logits), splits.test.labels)
        calibration["test_ece_after"] = expected_calibration_error(softmax(test_logits, temperature), splits.test.labels)
    final["calibration"] = calibration
    return final, temperature, test

def _plot_curves_safely(history: list[dict[str, float]], path: Path, title: str) -> None:
    from fer_train.plots import plot_curves

    try:
        plot_curves(history, path, title)
    except Exception as exc:  # a plotting problem must never cost a training run
        log.warning("could not draw %s: %s", path, exc)


def _progress(items: list[Any], desc: str, enabled: bool) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
