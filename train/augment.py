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
    erase: float = 0.0  # probability of random erasing (one rectangle per image, 2-20% of the area)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return bool(self.rotation or self.shift or self.zoom or self.hflip or self.erase)


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
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.erase:
        out = random_erase(out, cfg.erase, generator)
    return out.to(x.dtype)


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability ``p`` per image, fill one random rectangle (2-20% of the area, aspect
    0.3-3.3) with the image's mean: all images at once, with masks built by broadcasting."""
    n, _, h, w = x.shape
    rand = lambda: torch.rand(n, generator=generator)  # noqa: E731
    area = (0.02 + 0.18 * rand()) * h * w
    aspect = torch.exp(torch.log(torch.tensor(0.3)) + rand() * 2 * torch.log(torch.tensor(1 / 0.3)))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    top = rand() * (h - eh)
    left = rand() * (w - ew)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
    mask &= (rand() < p).view(-1, 1, 1)
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(mask.unsqueeze(1).to(x.device), fill, x)
