"""Portable models on ONNX Runtime: the crop and frame models ``fer-export --portable`` writes.

A portable model carries its own preprocessing (and, for the frame model, detection and crop
framing), so any ONNX Runtime can run it; here they are thin session wrappers, used by the parity
checks and the benchmarks and available to callers who want one ONNX file per task. The NumPy path
(:class:`~fer_runtime.EmotionRecognizer`) stays the default (BENCHMARKS.md, "Portable models").
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_runtime.detector import Detection
from fer_runtime.errors import InputError, ModelError
from fer_runtime.session import make_session

PORTABLE_KEY = "fer_edge_portable"  # metadata_props key of a portable model's JSON description
PORTABLE_FORMAT = "fer-edge-portable"


class PortableModel:
    """One portable model (``.onnx`` or ``.ort``) in an ONNX Runtime session; ``metadata`` is its JSON."""

    kind = ""

    def __init__(self, model: str | os.PathLike[str] | bytes, *, providers: str | Sequence[str] = "cpu",
                 threads: int | None = None, session: Any = None) -> None:
        if session is None:
            if isinstance(model, bytes):
                data, source = model, "portable model"
            else:
                data, source = Path(model).read_bytes(), str(model)
            session = make_session(data, source, providers=providers, threads=threads)
        else:
            source = "injected session"
        raw = dict(session.get_modelmeta().custom_metadata_map).get(PORTABLE_KEY)
        if raw is None:
            raise ModelError(f"{source}: not a portable fer-edge model (no {PORTABLE_KEY!r} metadata)")
        self.metadata: dict[str, Any] = json.loads(raw)
        if self.metadata.get("format") != PORTABLE_FORMAT or self.metadata.get("kind") != self.kind:
            raise ModelError(f"{source}: a {self.metadata.get('kind')!r} portable model, expected {self.kind!r}")
        self.source, self._session = source, session
        self._outputs = [o.name for o in session.get_outputs()]
        self._input = session.get_inputs()[0].name

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.metadata["labels"])

    def run(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model, by name."""
        return dict(zip(self._outputs, self._session.run(self._outputs, {self._input: array})))


class PortableCropModel(PortableModel):
    """uint8 RGB face crops (N, H, W, 3) of one size -> probabilities (N, C), label, logits, preprocessed."""

    kind = "crop"

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        batch = np.asarray(images)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
            raise InputError("the crop model takes uint8 RGB crops (N, H, W, 3) of one size, "
                             f"got {batch.dtype} {batch.shape}")
        return self.run(batch)["probabilities"]


class PortableFrameModel(PortableModel):
    """One uint8 RGB frame (H, W, 3) -> the faces in it (boxes, scores, landmarks, probabilities, labels)."""

    kind = "frame"

    def detect(self, frame: np.ndarray) -> tuple[list[Detection], np.ndarray]:
        """The detections (best detector score first) and their probabilities (F, C)."""
        arr = np.asarray(frame)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
            raise InputError(f"the frame model takes one uint8 RGB frame (H, W, 3), got {arr.dtype} {arr.shape}")
        out = self.run(arr)
        found = [Detection(tuple(map(float, b)), float(s), tuple(map(tuple, m.astype(float).tolist())))  # type: ignore[arg-type]
                 for b, s, m in zip(out["boxes"], out["scores"], out["landmarks"])]
        return found, out["probabilities"]
