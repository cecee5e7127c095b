"""Batched data augmentation in the style of Keras' ImageDataGenerator.

Random rotation, width/height shift, zoom and horizontal flip, each drawn per image,
applied to a whole batch with one ``affine_grid`` + ``grid_sample`` call. (torchvision's
v2 transforms draw one set of parameters per call, i.e. per batch; per-image draws would
mean a Python loop over the batch, the bottleneck this avoids.) Edges are filled with the
nearest border pixel, as Keras' default ``fill_mode='nearest'``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation: float = 15.0  # degrees, +-
    shift: float = 0.1  # fraction of width/height, +-
    zoom: float = 0.1  # +- relative scale
    hflip: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return bool(self.rotation or self.shift or self.zoom or self.hflip)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly transform a float batch (N, C, H, W); same shape and dtype out."""
    if x.ndim != 4:
        raise ValueError(f"augment expects (N, C, H, W), got shape {tuple(x.shape)}")
    if not cfg.enabled or x.shape[0] == 0:
        return x
    n = x.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * bound

    angle = uniform(math.radians(cfg.rotation))
    scale = 1.0 + uniform(cfg.zoom)  # >1 zooms out (samples a larger area)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones(n)
    tx, ty = uniform(2 * cfg.shift), uniform(2 * cfg.shift)  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    ).to(x.device, torch.float32)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(x.dtype)
