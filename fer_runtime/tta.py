"""Test-time augmentation: several views of each face, their calibrated probabilities averaged.

A view is a window of the model's preprocessed input, optionally mirrored: the whole face; a crop a
few pixels smaller resized back with the preprocessing's bilinear weights (``resize=True``); or the
face shifted by a few pixels, its edges repeated (``resize=False``).
Histogram equalization does not change under a mirror, so a flipped view is exactly the
preprocessing of the mirrored face. Each view costs one more pass of the model per face.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fer_runtime.errors import ConfigError
from fer_runtime.preprocessing import axis_weights

POSITIONS = {
    "centre": ((0.5, 0.5),),
    "five": ((0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)),
    "nine": tuple((r, c) for r in (0.0, 0.5, 1.0) for c in (0.0, 0.5, 1.0)),
}
"""Where crops sit in the face, as (row, column) fractions of the free margin."""


@dataclass(frozen=True)
class Views:
    """Which views of a face are classified: ``positions`` windows (a key of :data:`POSITIONS`)
    ``margin`` pixels smaller than the input (0: the whole face), resized back (``resize``) or taken
    from the input padded by ``margin / 2`` repeated edge pixels on each side (a shift of up to
    ``margin / 2`` pixels), each also ``flip``-ped when asked."""

    margin: int = 0
    positions: str = "centre"
    flip: bool = False
    resize: bool = True

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS or not 0 <= self.margin <= 16:
            raise ConfigError(f"views need positions in {sorted(POSITIONS)} and a margin of 0-16 px, "
                              f"got {self.positions!r}, {self.margin}")

    @property
    def count(self) -> int:
        """How many times the model runs per face."""
        return len(POSITIONS[self.positions]) * (2 if self.flip else 1)

    def apply(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, C, S, S) model input -> (V, N, C, S, S), the views of each face."""
        size = batch.shape[-1]
        side = size - self.margin
        source = batch
        if not self.resize and self.margin:
            half = self.margin // 2
            source = np.pad(batch, [(0, 0)] * (batch.ndim - 2) + [(half, self.margin - half)] * 2, mode="edge")
            side = size
        out = []
        for fy, fx in POSITIONS[self.positions]:
            top, left = round(fy * self.margin), round(fx * self.margin)
            window = source[..., top:top + side, left:left + side]
            view = window if side == size else _resize(window, size)
            out.append(view)
            if self.flip:
                out.append(view[..., ::-1])
        return np.ascontiguousarray(np.stack(out), dtype=np.float32)


@lru_cache(maxsize=8)
def _weights(side: int, size: int) -> np.ndarray:
    weights, denominator = axis_weights(side, size)
    return (weights / denominator).astype(np.float32)


def _resize(window: np.ndarray, size: int) -> np.ndarray:
    w = _weights(window.shape[-1], size)
    return w @ window @ w.T


TTA_MODES: dict[str, Views] = {
    "none": Views(),
    "flip": Views(flip=True),
    # Chosen on validation faces with the shipped models that held them out (vgg, vgg-medium):
    # the face shifted by up to a pixel in five ways, each with its mirror image, had the best mean
    # accuracy; crops resized back did worse than a single view (experiments/tta_selection.py,
    # benchmarks/results/tta/tta.md).
    "crops": Views(margin=2, positions="five", flip=True, resize=False),
}
"""The modes ``EmotionRecognizer(tta=...)`` and ``fer-predict --tta`` take."""


def views_for(tta: str | Views | None) -> Views:
    """The :class:`Views` of a mode name (or ``None``: one view), or a :class:`Views` as given."""
    if tta is None:
        return TTA_MODES["none"]
    if isinstance(tta, Views):
        return tta
    if tta not in TTA_MODES:
        raise ConfigError(f"tta must be one of {', '.join(TTA_MODES)} (or a Views), got {tta!r}")
    return TTA_MODES[tta]
