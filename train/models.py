"""Architectures: a registry (a table of builders), not a class per model.

``seed`` is the write-up's 16-layer CNN, layer for layer:
conv16-BN-pool, conv64-pool, conv128-BN-pool, conv256-pool, flatten, fc128-dropout-fc84-dropout-fc7
(3x3 convolutions, ReLU after each conv and hidden fc).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fer_runtime import NUM_CLASSES


def seed_cnn(
    in_channels: int = 1,
    num_classes: int = NUM_CLASSES,
    input_size: int = 48,
    padding: int = 1,
    dropout: float = 0.4,
) -> nn.Sequential:
    """The write-up's 16 layers (ReLUs are activations, not counted as layers)."""

    def conv(cin: int, cout: int, bn: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=padding)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        return [*layers, nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    side = input_size
    for _ in range(4):  # each stage: 3x3 conv (shrinks by 2 - 2*padding), then 2x2 pool
        side = (side + 2 * padding - 2) // 2
    if side < 1:
        raise ValueError(f"input_size {input_size} is too small for the seed CNN with padding={padding}")
    return nn.Sequential(
        *conv(in_channels, 16, bn=True),
        *conv(16, 64, bn=False),
        *conv(64, 128, bn=True),
        *conv(128, 256, bn=False),
        nn.Flatten(),
        nn.Linear(256 * side * side, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(128, 84),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(84, num_classes),
    )


def vgg_gap(
    in_channels: int = 1,
    num_classes: int = NUM_CLASSES,
    input_size: int = 48,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks: tuple[int, ...] = (1, 2, 2, 2),
    dropout: float = 0.3,
) -> nn.Sequential:
    """VGG-style stages of 3x3 conv-BN-ReLU, a 2x2 max-pool after each stage, global average
    pooling and one linear layer. The first stage has a single conv at full resolution: early
    downsampling is what keeps training affordable on a CPU. Stage ``i`` has ``blocks[i]`` convs of
    ``widths[i]`` channels."""
    if len(widths) != len(blocks) or not widths:
        raise ValueError("widths and blocks must be non-empty and of equal length")
    if input_size >> len(widths) < 1:
        raise ValueError(f"input_size {input_size} is too small for {len(widths)} pooling stages")
    layers: list[nn.Module] = []
    cin = in_channels
    for width, n in zip(widths, blocks):
        for _ in range(n):
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


class RepConv(nn.Module):
    """A 3x3 convolution trained as three parallel branches, RepVGG-style (Ding et al., 2021):
    3x3 conv-BN + 1x1 conv-BN (+ BN alone when the shape allows an identity), summed, then ReLU.
    ``groups == channels`` makes it depthwise. :meth:`fused` folds the branches into one 3x3 conv
    with a bias: the exported graph is a plain convolution, the extra branches cost nothing at
    inference."""

    def __init__(self, cin: int, cout: int, groups: int = 1) -> None:
        super().__init__()
        self.cin, self.cout, self.groups = cin, cout, groups
        self.conv3 = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn_id = nn.BatchNorm2d(cout) if cin == cout else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        if self.bn_id is not None:
            y = y + self.bn_id(x)
        return self.act(y)

    @staticmethod
    def _fold(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    @torch.no_grad()
    def fused(self) -> nn.Sequential:
        """The equivalent inference block: one 3x3 conv (with bias) and the ReLU."""
        k3, b3 = self._fold(self.conv3.weight, self.bn3)
        k1, b1 = self._fold(nn.functional.pad(self.conv1.weight, (1, 1, 1, 1)), self.bn1)
        kernel, bias = k3 + k1, b3 + b1
        if self.bn_id is not None:
            per_group = self.cin // self.groups
            eye = torch.zeros_like(self.conv3.weight)
            eye[torch.arange(self.cout), torch.arange(self.cout) % per_group, 1, 1] = 1.0
            k_id, b_id = self._fold(eye, self.bn_id)
            kernel, bias = kernel + k_id, bias + b_id
        conv = nn.Conv2d(self.cin, self.cout, 3, padding=1, groups=self.groups, bias=True).to(self.conv3.weight)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        return nn.Sequential(conv, nn.ReLU(inplace=True))


def rep_gap(
    in_channels: int = 1,
    num_classes: int = NUM_CLASSES,
    input_size: int = 48,
    widths: tuple[int, ...] = (16, 32, 64, 128),
    blocks: tuple[int, ...] = (1, 1, 1, 2),
    separable: tuple[int, ...] = (0, 0, 0, 0),
    dropout: float = 0.2,
) -> nn.Sequential:
    """The efficient family: ``vgg_gap``'s shape (a 2x2 max-pool between stages, global average
    pooling over the last stage, one linear layer) built of :class:`RepConv` blocks, so training sees multi-branch
    blocks and inference a plain conv stack (:func:`for_inference`). A stage with ``separable[i]``
    set uses depthwise-separable blocks instead: depthwise RepConv 3x3, then a 1x1 conv-BN-ReLU.
    The first stage is always one full convolution (a single input channel has nothing to separate)."""
    if not (len(widths) == len(blocks) == len(separable)) or not widths:
        raise ValueError("widths, blocks and separable must be non-empty and of equal length")
    if input_size >> (len(widths) - 1) < 2:
        raise ValueError(f"input_size {input_size} is too small for {len(widths)} stages")
    if separable[0]:
        raise ValueError("the first stage cannot be separable (its input has one channel)")
    layers: list[nn.Module] = []
    cin = in_channels
    for stage, (width, n, sep) in enumerate(zip(widths, blocks, separable)):
        if stage:
            layers.append(nn.MaxPool2d(2))
        for _ in range(n):
            if sep:
                layers += [RepConv(cin, cin, groups=cin), nn.Conv2d(cin, width, 1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            else:
                layers.append(RepConv(cin, width))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every :class:`RepConv` folded into its plain
    convolution (what export writes); other models come back as an eval-mode copy."""
    import copy

    model = copy.deepcopy(model).eval()

    def fold(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, RepConv):
                setattr(module, name, child.fused())
            else:
                fold(child)

    fold(model)
    return model


# name -> (builder, default arguments). Add architectures here; CLI choices come from this table.
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "seed": (seed_cnn, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48, "padding": 1, "dropout": 0.4}),
    # The first flagship (the default until vgg-deep): about 1.2M parameters, 192 MFLOP per face.
    "vgg": (vgg_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                      "widths": (32, 64, 128, 256), "blocks": (1, 2, 2, 2), "dropout": 0.3}),
    # The flagship (fer_runtime's default): vgg with a third conv in the last (6x6) stage: +51%
    # parameters, +22% FLOPs (235 MFLOP); fer-bench: 1.77 ms fp32 on 2 threads (model only, p50), inside
    # the 2 ms budget by a small margin (end to end 1.8-2.0 ms).
    "vgg-deep": (vgg_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                           "widths": (32, 64, 128, 256), "blocks": (1, 2, 2, 3), "dropout": 0.3}),
    # The smallest: the same shape at half the width (a quarter of the FLOPs).
    "vgg-small": (vgg_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                            "widths": (16, 32, 64, 128), "blocks": (1, 2, 2, 2), "dropout": 0.2}),
    # The fast variant, between the two: 1.25x vgg-small's width (1.6x its FLOPs), sized so its int8
    # model stays under 0.5 ms per face at batch 1 here (fer-bench: 0.47 ms on one thread).
    "vgg-medium": (vgg_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                             "widths": (20, 40, 80, 160), "blocks": (1, 2, 2, 2), "dropout": 0.25}),
    # A fast-variant candidate with vgg-medium's int8 latency and twice its parameters: narrow where
    # the image is large (12 channels at 48x48, 32 at 24x24), wide and deeper where it is small (96 at
    # 12x12, three convs of 192 at 6x6). `fer-bench arch vgg-medium
    # vgg-medium:widths=12-32-96-192,blocks=1-2-2-3 --threads 1`: int8 batch 1 1.00x vgg-medium in two
    # runs (0.424 vs 0.422 ms, 0.406 vs 0.405 ms p50); 956k parameters, 107 MFLOP.
    "vgg-taper": (vgg_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                            "widths": (12, 32, 96, 192), "blocks": (1, 2, 2, 3), "dropout": 0.3}),
    # The efficient family (rep_gap): multi-branch RepConv blocks folded into plain convs at export.
    "rep": (rep_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                      "widths": (16, 32, 64, 128), "blocks": (1, 1, 1, 2), "separable": (0, 0, 0, 0),
                      "dropout": 0.2}),
    # The fast candidate: full convs only at 48x48 and 24x24 (16 and 32 channels), depthwise-separable
    # stages at 12x12, 6x6 and a fifth at 3x3, where channels are cheap. Chosen by `fer-bench arch
    # model:vgg-taper rep-fast --threads 1` before training (an AMD EPYC with AVX-512 VNNI): int8 batch 1
    # 0.130 ms against vgg-taper-int8's 0.313, fp32 0.218 ms against 1.044; 309k parameters, 18 MFLOP.
    # Trained with vgg-taper's recipe (2026-12-07): validation 65.29%, PublicTest 65.67%; not shipped
    # (experiments/LOG.md): too little capacity for the fast variant's accuracy.
    "rep-fast": (rep_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                           "widths": (16, 32, 96, 192, 384), "blocks": (1, 1, 2, 2, 2),
                           "separable": (0, 0, 1, 1, 1), "dropout": 0.2}),
    # rep-fast with more capacity where it is cheap: 40 channels at 24x24 and two full convs of 80 at
    # 12x12 (separable from 6x6), three blocks at 6x6. `fer-bench arch rep-fast
    # rep-fast:widths=16-40-80-192-384,blocks=1-1-2-3-2,separable=0-0-0-1-1 --threads 1 --rounds 400`
    # (2-core AMD EPYC, AVX-512 VNNI): int8 batch 1 1.26x rep-fast (0.232 vs 0.185 ms p50), fp32 1.99x;
    # 419k parameters, 43 MFLOP. Trained with rep-fast's recipe (2026-12-08): validation 67.90%, PublicTest 66.34%;
    # not shipped (experiments/LOG.md): 1.2 points short of vgg-taper's held-out run on validation.
    "rep-mid": (rep_gap, {"in_channels": 1, "num_classes": NUM_CLASSES, "input_size": 48,
                          "widths": (16, 40, 80, 192, 384), "blocks": (1, 1, 2, 3, 2),
                          "separable": (0, 0, 0, 1, 1), "dropout": 0.2}),
}


def check_architecture(name: str) -> None:
    """Raise ValueError listing the valid names unless ``name`` is in ARCHITECTURES (what fer-train's
    --arch and TrainConfig check, and build_model)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHITECTURES))}")


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered architecture; unknown names raise ValueError listing the valid ones."""
    check_architecture(name)
    builder, defaults = ARCHITECTURES[name]
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown arguments for {name!r}: {', '.join(sorted(unknown))}")
    return builder(**{**defaults, **overrides})


def arch_args(name: str, **overrides: Any) -> dict[str, Any]:
    """The full argument dict a checkpoint stores to rebuild ``name``."""
    build_model(name, **overrides)  # validates
    return {**ARCHITECTURES[name][1], **overrides}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model: nn.Module) -> str:
    """The layer list (activations left out, as the write-up counts layers) and the parameter count."""
    if isinstance(model, nn.Sequential):
        layers = [m for m in model if not isinstance(m, nn.ReLU)]
        lines = [f"{i:2d} {type(m).__name__:12s} {m.extra_repr()}" for i, m in enumerate(layers, 1)]
    else:
        lines = [repr(model)]
    return "\n".join([*lines, f"parameters: {count_parameters(model):,}"])


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """fp32 logits in eval mode, batched (used for validation, evaluation and export checks)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, NUM_CLASSES)
