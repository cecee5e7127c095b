"""Result types shared by the classifier and the pipeline above it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """One face's expression: the top ``label`` (its ``index`` in the model's labels) and its
    calibrated probability ``score``; ``probabilities`` holds every class's."""

    label: str
    index: int
    score: float
    probabilities: dict[str, float] = field(repr=False)
