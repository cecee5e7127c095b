"""The JSON shapes the service answers with, for its OpenAPI document (with examples).

The answers themselves are written by the result model's ``to_dict()`` (Prediction, Face,
TrackedFace, FrameResult); these classes only describe them, field for field.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

from fer_runtime.labels import LABELS

_PROBS = dict(zip(LABELS, (0.012, 0.001, 0.015, 0.902, 0.031, 0.021, 0.018)))


class PredictionOut(BaseModel):
    """One face's expression (``Prediction.to_dict()``)."""

    label: str = Field(examples=["Happy"])
    confidence: float = Field(examples=[0.902], description="the label's calibrated probability")
    probabilities: dict[str, float] = Field(examples=[_PROBS], description="every label's probability, summing to 1")


class FaceOut(PredictionOut):
    """A face found in an image (``Face.to_dict()``): where, how sure the detector is, and its expression."""

    face: int = Field(examples=[0], description="rank in the image, 0 = best detector score")
    box: list[int] = Field(min_length=4, max_length=4, examples=[[78, 68, 90, 109]], description="x, y, width, height")
    detector_score: Optional[float] = Field(examples=[0.93])
    landmarks: Optional[list[list[float]]] = Field(
        examples=[[[101.2, 106.5], [139.8, 105.1], [121.0, 128.3], [104.6, 148.9], [137.2, 147.7]]],
        description="right eye, left eye, nose tip, right and left mouth corner (the subject's right)")


class ImageSize(BaseModel):
    width: int = Field(examples=[640])
    height: int = Field(examples=[480])


class FacesOut(BaseModel):
    """``POST /v1/faces``: the faces of one image, best detector score first."""

    model: str = Field(examples=["vgg-deep"])
    image: ImageSize
    ms: float = Field(examples=[11.8], description="milliseconds from the body's arrival to the answer: waiting for a job, "
                              "decoding, detection, classification")
    faces: list[FaceOut]


class CropsOut(BaseModel):
    """``POST /v1/crops``: one prediction per face crop, in the order sent."""

    model: str = Field(examples=["vgg-deep"])
    ms: float = Field(examples=[3.1], description="milliseconds from the body's arrival to the answer")
    predictions: list[PredictionOut]


class TrackedFaceOut(FaceOut):
    """A face in a stream frame (``TrackedFace.to_dict()``): label, confidence and probabilities are
    smoothed over time; ``raw`` is this frame's own prediction."""

    track: int = Field(examples=[1], description="the same while the face stays in view")
    detected: bool = Field(examples=[True], description="false when the box was carried from an earlier frame")
    raw: PredictionOut


class FrameOut(BaseModel):
    """One processed stream frame (``FrameResult.to_dict()``), sent as a text message."""

    frame: int = Field(examples=[41], description="the frame's number on this connection, counting dropped frames")
    time_s: float = Field(examples=[1.372], description="seconds since the connection opened, when it arrived")
    size: list[int] = Field(examples=[[480, 640]], description="height, width")
    dropped: int = Field(examples=[3], description="frames dropped so far on this connection (sent faster than processed)")
    faces: list[TrackedFaceOut]


class ErrorDetail(BaseModel):
    type: str = Field(examples=["payload_too_large"])
    message: str = Field(examples=["the body is over the limit of 8,388,608 bytes"])


class ErrorOut(BaseModel):
    """Every error answer (and a stream's per-frame error message)."""

    error: ErrorDetail


class ModelOut(BaseModel):
    name: str = Field(examples=["vgg-deep"])
    labels: list[str] = Field(examples=[list(LABELS)])
    version: Optional[str] = Field(examples=["0.1.0"], description="the fer-edge version that exported the model")
    sha256: str = Field(examples=["9d8a17c8cd16a921398b1dbe69fdfc0c123750bc3e32403d5cd5f2c3c7cdb119"])
    accuracy: Optional[float] = Field(examples=[0.7013], description="PublicTest accuracy from the model's metadata")
    file: Optional[str] = Field(examples=["vgg-deep-int8"], description="the variant loaded for this name (see precision)")
    precision: Optional[str] = Field(examples=["int8"], description="the precision of the file loaded")
    precision_reason: Optional[str] = Field(examples=["the CPU has avx512_vnni"],
                                            description="why this precision was loaded (see the runtime's precision=)")
    arch: Optional[str] = Field(examples=["vgg-deep"])


class ModelsOut(BaseModel):
    """``GET /v1/models``: the model this service runs, and the service's settings that matter to clients."""

    models: list[ModelOut]
    runtime_version: str = Field(examples=["0.1.0"])
    detector: dict[str, float] = Field(examples=[{"score_threshold": 0.6, "nms_threshold": 0.3, "min_face": 20,
                                                  "max_size": 1920}])
    limits: dict[str, float] = Field(examples=[{"max_body_bytes": 8388608, "max_pixels": 16000000}])


class StatusOut(BaseModel):
    status: str = Field(examples=["ok"])
