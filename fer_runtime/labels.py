"""The seven FER2013 emotion classes, in the dataset's label order (used everywhere)."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(LABELS)
