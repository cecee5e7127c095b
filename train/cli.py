"""Command-line tools: ``fer-train`` (train a model) and ``fer-eval`` (evaluate a checkpoint).

Thin typer wrappers: heavy imports happen inside the commands so ``--help`` is instant,
and library errors become one-line messages with a non-zero exit.
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from fer_train import choices

DATA_HELP = "FER2013 source: fer2013.csv(.gz), Kaggle's train.csv or an image-folder tree. Default: $FER2013_PATH."


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


# The lists live in fer_train.choices (torch-free, so --help stays instant); TrainConfig checks the same ones.
Optim = _choices("Optim", choices.OPTIMIZERS)
Sched = _choices("Sched", choices.SCHEDULERS)
Device = _choices("Device", choices.DEVICES)
Precision = _choices("Precision", choices.PRECISIONS)
ClassWeights = _choices("ClassWeights", choices.CLASS_WEIGHTS)
Split = _choices("Split", choices.EVAL_SPLITS)

# TrainConfig fields fer-train does not expose, and why; every other field is an option of the same
# name and default (tests/test_cli.py checks both), except ``augment`` (--erase, --no-augment).
INTERNAL_FIELDS = {
    "momentum": "SGD's momentum stays the recipe's 0.9",
    "val_fraction": "fixed, so every run validates on the same faces",
    "split_seed": "fixed, so every run validates on the same faces",
    "preprocess": "the runtime's preprocessing; a model trained otherwise would need its own runtime config",
}


def _architecture_names(incomplete: str) -> list[str]:
    from fer_train.models import ARCHITECTURES  # imports torch: only when completing, never for --help

    return [name for name in sorted(ARCHITECTURES) if name.startswith(incomplete)]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@train_app.command()
def fer_train(
    arch: Annotated[str, typer.Option(autocompletion=_architecture_names, help="Architecture name from fer_train.models.ARCHITECTURES (e.g. seed); an unknown name lists the valid ones.")] = "seed",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (the write-up used 50).")] = 50,
    batch_size: Annotated[int, typer.Option(min=2, help="Global batch size (split over DDP workers).")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    optimizer: Annotated[Optim, typer.Option(help="Optimizer.")] = "adam",  # type: ignore[assignment]
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    scheduler: Annotated[Sched, typer.Option(help="Learning-rate schedule over the epochs.")] = "cosine",  # type: ignore[assignment]
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.0,
    warmup_epochs: Annotated[int, typer.Option(min=0, help="Linear learning-rate warm-up epochs before the cosine decay.")] = 0,
    mixup: Annotated[float, typer.Option(min=0.0, help="Mixup Beta(alpha, alpha); 0 turns it off.")] = 0.0,
    erase: Annotated[float, typer.Option(min=0.0, max=1.0, help="Random-erasing probability per face.")] = 0.0,
    class_weights: Annotated[ClassWeights, typer.Option(help="Loss weights per class: none, balanced (1/frequency) or sqrt.")] = "none",  # type: ignore[assignment]
    soft_labels: Annotated[float, typer.Option(min=0.0, max=1.0, help="Blend FER+ annotator votes into the training targets with this weight (0 = FER2013 one-hot labels only). Validation and test stay on FER2013 labels.")] = 0.0,
    ferplus: Annotated[Optional[Path], typer.Option(envvar="FERPLUS_PATH", help="FER+ vote file (fer2013new.csv, row-aligned with the data). Default: a fer*new*.csv next to the data.")] = None,
    teacher: Annotated[Optional[list[Path]], typer.Option(help="Distil from this fer-train checkpoint (e.g. models/vgg/best.pt): loss = (1 - D) * cross-entropy + D * T^2 * KL(teacher || student), on the same augmented faces. Repeat it to distil from an ensemble: the mean of the teachers' logits.")] = None,
    distill: Annotated[float, typer.Option(min=0.01, max=1.0, help="D: weight of the distillation term when --teacher is set.")] = 0.5,
    distill_temperature: Annotated[float, typer.Option(min=0.1, help="T: softmax temperature of the distillation term.")] = 4.0,
    init_from: Annotated[Optional[Path], typer.Option(help="Start from this fer-train checkpoint's weights (same architecture) instead of a random init: fine-tuning. Optimizer and schedule start afresh.")] = None,
    swa_start: Annotated[Optional[int], typer.Option(min=1, help="Stochastic weight averaging: from this epoch (1-based) on, the lr stays at --swa-lr and each epoch's final weights join an equal-weight average (BatchNorm statistics recomputed on the training faces), which is what is validated and saved as best.pt. With --init-from and --swa-start 1: SWA fine-tuning of a trained model.")] = None,
    swa_lr: Annotated[Optional[float], typer.Option(help="Constant lr of the averaging phase (the cosine decays to it). Default: --lr / 5.")] = None,
    train_on_val: Annotated[bool, typer.Option("--train-on-val", help="The final fit, once the recipe was chosen on validation: train on the validation faces too. Nothing is selected (best.pt is the last epoch's model, or the SWA average), validation figures are marked as trained on, and the softmax temperature is --temperature-of's, else --init-from's, else 1. Such a checkpoint can teach or initialise only other --train-on-val runs.")] = False,
    temperature_of: Annotated[Optional[Path], typer.Option(help="With --train-on-val: take the softmax temperature from this checkpoint, e.g. the run with the same recipe that held validation out.")] = None,
    data: Annotated[Optional[Path], typer.Option(envvar="FER2013_PATH", help=DATA_HELP)] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Where checkpoints, metrics and plots go.")] = Path("runs/seed"),
    device: Annotated[Device, typer.Option(help="auto: CUDA when torch sees a GPU, else CPU.")] = "auto",  # type: ignore[assignment]
    precision: Annotated[Precision, typer.Option(help="auto: bf16 autocast + channels_last on bf16-capable CPUs, AMP on CUDA.")] = "auto",  # type: ignore[assignment]
    seed: Annotated[int, typer.Option(help="Random seed (shuffling, augmentation, init, dropout).")] = 0,
    limit: Annotated[Optional[int], typer.Option(min=2, help="Train on a stratified subset of this many faces (smoke runs).")] = None,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Turn augmentation off.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT_DIR/last.pt (after its last completed epoch). With a larger --epochs it extends a finished run: the cosine schedule is stretched to the new length (a warm restart).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train a FER model on FER2013 (Training minus a 10% validation split; PublicTest reported at the end).

    Writes OUT_DIR/last.pt (every epoch, for --resume), best.pt (best validation accuracy),
    metrics.csv/json, curves.png and confusion matrices. Runs under torchrun for DDP.
    """
    _setup_logging(verbose)
    from fer_train.augment import AugmentConfig
    from fer_train.checkpoint import CheckpointError
    from fer_train.data import DataError
    from fer_train.engine import TrainConfig, train

    try:
        cfg = TrainConfig(
            arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer.value,
            weight_decay=weight_decay, scheduler=scheduler.value, label_smoothing=label_smoothing,
            warmup_epochs=warmup_epochs, mixup=mixup, class_weights=class_weights.value,
            soft_labels=soft_labels, ferplus=str(ferplus) if ferplus and soft_labels > 0 else None,
            teacher=[str(t) for t in teacher] if teacher else None, distill=distill, distill_temperature=distill_temperature,
            init_from=str(init_from) if init_from else None, swa_start=swa_start, swa_lr=swa_lr, train_on_val=train_on_val,
            temperature_of=str(temperature_of) if temperature_of else None,
            data=str(data) if data else None, out_dir=str(out_dir), device=device.value,
            precision=precision.value, seed=seed, limit=limit,
            augment=AugmentConfig(0.0, 0.0, 0.0, False) if no_augment else AugmentConfig(erase=erase),
            progress=progress,
        )
        result = train(cfg, resume=resume)
    except (DataError, CheckpointError, ValueError) as exc:  # user errors; anything else is a bug: traceback
        _fail(exc)
        return
    if result.test_metrics is not None:
        single, tta = result.test_metrics["single"], result.test_metrics["flip_tta"]
        chosen = (f"last epoch {result.best_epoch}: val acc (trained on) {result.best_val_acc:.4f}" if train_on_val
                  else f"best epoch {result.best_epoch}: val acc {result.best_val_acc:.4f}")
        typer.echo(
            f"{chosen}; PublicTest acc {single['accuracy']:.4f} "
            f"(flip TTA {tta['accuracy']:.4f}), macro-F1 {single['macro_f1']:.4f}; files in {result.out_dir}"
        )


eval_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@eval_app.command()
def fer_eval(
    checkpoint: Annotated[list[Path], typer.Argument(help="A checkpoint written by fer-train (best.pt); several: evaluate their ensemble (the mean of their logits, as fer-train --teacher A --teacher B distils from).")],
    data: Annotated[Optional[Path], typer.Option(envvar="FER2013_PATH", help=DATA_HELP)] = None,
    split: Annotated[Split, typer.Option(help="Labelled split; 'val' is the checkpoint's own validation split.")] = "PublicTest",  # type: ignore[assignment]
    flip_tta: Annotated[bool, typer.Option("--flip-tta/--no-flip-tta", help="Also report horizontal-flip TTA (separately).")] = True,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the report as JSON here, and a confusion-matrix PNG beside it.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall and confusion matrix of CHECKPOINT on a labelled split."""
    _setup_logging(verbose)
    from fer_runtime import LABELS
    from fer_train import compat
    from fer_train.checkpoint import Checkpoint, CheckpointError
    from fer_train.data import DataError, load_fer2013, make_splits
    from fer_train.evaluate import ensemble_logits, evaluate_logits
    from fer_train.metrics import ClassReport

    try:
        ckpts = [Checkpoint.load(c) for c in checkpoint]
        fer = load_fer2013(data)
        if split.value == "val":
            part = make_splits(fer, *compat.validation_split_of(ckpts, checkpoint)).val
        else:
            part = fer.split(split.value)
        if split.value == "Training" and compat.trained_on(ckpts, fer.sha256):
            typer.secho("note: the checkpoint was trained on this split; this is not a test figure", err=True)
        logits, mirrored = ensemble_logits(ckpts, part.images, flip_tta)
        report = evaluate_logits(logits, part.labels, mirrored)
    except (DataError, CheckpointError, ValueError) as exc:
        _fail(exc)
        return
    name = " + ".join(map(str, checkpoint))
    typer.echo(f"{name} on {split.value} ({report['n']} faces), single crop:")
    typer.echo(ClassReport(**report["single"]).table(tuple(ckpts[0].labels) or LABELS))
    if report["flip_tta"]:
        t = report["flip_tta"]
        typer.echo(f"with horizontal-flip TTA: accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f}")
    if out:
        from fer_train.plots import plot_confusion

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"checkpoint": [str(c) for c in checkpoint] if len(checkpoint) > 1 else str(checkpoint[0]),
                                   "split": split.value, **report}, indent=1))
        title = checkpoint[0].name if len(checkpoint) == 1 else f"ensemble of {len(checkpoint)}"
        plot_confusion(report["single"]["confusion"], out.with_suffix(".png"), f"{title} on {split.value}")
        typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


def train_main() -> None:
    train_app()


def eval_main() -> None:
    eval_app()
