"""The portable models' graphs, written as the steps of the Python runtime they reproduce.

Crop model (``NAME.crop.onnx``): uint8 RGB face crops (N, H, W, 3) -> grey (BT.601 fixed point, as
``cv2.cvtColor``) -> size x size (area averaging when shrinking, half-pixel bilinear when enlarging,
as two matrix products whose weights are computed in the graph) -> histogram equalization (as
``cv2.equalizeHist``) -> scaling -> the classifier -> temperature softmax. Every step mirrors one
function of :mod:`fer_runtime.preprocessing` operation for operation and in the same float types, so
the classifier's input is bit for bit what :func:`fer_runtime.preprocess` makes.

Frame model (``NAME.frame.onnx``): one uint8 RGB frame (H, W, 3) -> working size (the detector's
whole-factor shrink) -> YuNet -> decoding of its three strides -> score filter -> non-maximum
suppression -> per face, the crop framing of :class:`fer_runtime.pipeline.CropConfig` (roll
correction from the eyes) in a ``Loop`` -> the crop model's steps from the resize on.

Only standard ONNX operators (opset 18) are used, so any ONNX Runtime (Python, Node, WASM, Mobile,
C#, Java, C++) runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from fer_export.graph_builder import BOOL, DOUBLE, FLOAT, INT32, INT64, UINT8, GraphBuilder, inline_model, tensor
from fer_runtime.preprocessing import _GRAY_SHIFT, _GRAY_WEIGHTS_RGB, PreprocessConfig, _scaled_levels

OPSET = 18
IR_VERSION = 10
LEVELS = 256


# --- crop steps ----------------------------------------------------------------------------------

def gray_bt601(g: GraphBuilder, rgb: str) -> str:
    """uint8 (..., 3) RGB -> int32 (...) grey: (R*9798 + G*19235 + B*3735 + 2**14) >> 15, as to_gray."""
    with g.step("gray"):
        weighted = g.op("Mul", g.cast(rgb, INT32), g.const(_GRAY_WEIGHTS_RGB, np.int32))
        acc = g.op("ReduceSum", weighted, g.const([-1], np.int64), keepdims=0)
        rounded = g.op("Add", acc, g.scalar(1 << (_GRAY_SHIFT - 1), np.int32))
        return g.op("Div", rounded, g.scalar(1 << _GRAY_SHIFT, np.int32))  # non-negative: Div is the shift


def axis_weights(g: GraphBuilder, n_in: str, n_out: int) -> tuple[str, str]:
    """(weights, denominator) for one axis, as preprocessing._axis_weights: whole-number float64
    (n_out, n_in) weights (area overlaps in units of 1 / n_out when shrinking, the identity when equal;
    half-pixel bilinear fractions in units of 1 / (2 n_out) when enlarging) and their int64 row sum."""
    with g.step("weights"):
        i = g.const(np.arange(n_out, dtype=np.int64)[:, None], np.int64)
        j = g.op("Unsqueeze", g.op("Range", g.scalar(0, np.int64), n_in, g.scalar(1, np.int64)), g.const([0], np.int64))
        out = g.scalar(n_out, np.int64)
        one, zero = g.scalar(1, np.int64), g.scalar(0, np.int64)
        # Area: output pixel i covers [i n_in, (i + 1) n_in), input pixel j covers [j n_out, (j + 1) n_out).
        lo, hi = g.op("Mul", i, n_in), g.op("Mul", g.op("Add", i, one), n_in)
        overlap = g.op("Sub", g.op("Min", hi, g.op("Mul", g.op("Add", j, one), out)), g.op("Max", lo, g.op("Mul", j, out)))
        area = g.op("Max", overlap, zero)
        # Bilinear: sample ((2 i + 1) n_in - n_out) / (2 n_out) between its two neighbours, edges clamped.
        twice = g.scalar(2 * n_out, np.int64)
        num = g.op("Sub", g.op("Mul", g.const(2 * np.arange(n_out, dtype=np.int64)[:, None] + 1, np.int64), n_in), out)
        j0 = g.op("Sub", g.op("Div", g.op("Add", num, twice), twice), one)  # floor division (num > -2 n_out)
        frac = g.op("Sub", num, g.op("Mul", j0, twice))
        last = g.op("Sub", n_in, one)
        left = g.op("Min", g.op("Max", j0, zero), last)
        right = g.op("Min", g.op("Max", g.op("Add", j0, one), zero), last)
        bilinear = g.op("Add", g.op("Mul", g.op("Sub", twice, frac), g.cast(g.op("Equal", j, left), INT64)),
                        g.op("Mul", frac, g.cast(g.op("Equal", j, right), INT64)))
        shrinking = g.op("GreaterOrEqual", n_in, out)
        weights = g.cast(g.op("Where", shrinking, area, bilinear), DOUBLE)
        return weights, g.op("Where", shrinking, n_in, twice)


def round_ratio(g: GraphBuilder, numerator: str, denominator: str) -> str:
    """Non-negative int64 / positive int64, rounded half to even, in exact integer arithmetic."""
    q = g.op("Div", numerator, denominator)
    twice_r = g.op("Mul", g.op("Sub", numerator, g.op("Mul", q, denominator)), g.scalar(2, np.int64))
    odd = g.op("Equal", g.op("Mod", q, g.scalar(2, np.int64)), g.scalar(1, np.int64))
    up = g.op("Or", g.op("Greater", twice_r, denominator), g.op("And", g.op("Equal", twice_r, denominator), odd))
    return g.op("Add", q, g.cast(up, INT64))


def resize_square(g: GraphBuilder, gray: str, size: int) -> str:
    """int32 (N, H, W) grey -> int64 (N, size, size), as preprocessing.resize: two matrix products of
    whole numbers (exact in float64 whatever order they sum in), then one rounding half to even."""
    with g.step("resize"):
        rows, row_den = axis_weights(g, g.dim(gray, 1), size)
        cols, col_den = axis_weights(g, g.dim(gray, 2), size)
        sums = g.op("MatMul", g.op("MatMul", rows, g.cast(gray, DOUBLE)), g.op("Transpose", cols, perm=[1, 0]))
        return round_ratio(g, g.cast(sums, INT64), g.op("Mul", row_den, col_den))


def equalize_hist(g: GraphBuilder, pixels: str) -> str:
    """int64 (N, P) grey levels -> int64 (N, P) equalized, bit-exact with cv2.equalizeHist (see
    preprocessing._equalize_luts): histogram, cumulative sum, first occupied level, float32 scale,
    round half to even, one lookup per pixel."""
    with g.step("equalize"):
        n, total = g.dim(pixels, 0), g.dim(pixels, 1)
        zeros = g.op("ConstantOfShape", g.vec(n, g.scalar(LEVELS, np.int64)),
                     value=helper.make_tensor("value", INT64, [1], [0]))
        ones = g.op("Expand", g.scalar(1, np.int64), g.op("Shape", pixels))
        hist = g.op("ScatterElements", zeros, pixels, ones, axis=1, reduction="add")
        cum = g.op("CumSum", hist, g.scalar(1, np.int64))
        first = g.op("ArgMax", g.cast(g.op("Greater", hist, g.scalar(0, np.int64)), INT32), axis=1, keepdims=1)
        first_count = g.op("GatherElements", hist, first, axis=1)
        rest = g.op("Max", g.op("Sub", total, first_count), g.scalar(1, np.int64))
        scale = g.op("Div", g.scalar(255.0, np.float32), g.cast(rest, FLOAT))
        above = g.cast(g.op("Sub", cum, first_count), FLOAT)
        lut = g.op("Clip", g.op("Round", g.op("Mul", above, scale)), g.scalar(0.0, np.float32), g.scalar(255.0, np.float32))
        single_level = g.op("Equal", first_count, total)  # OpenCV leaves a one-level image unchanged
        lut = g.op("Where", single_level, g.const(np.arange(LEVELS, dtype=np.float32)[None], np.float32), lut)
        return g.cast(g.op("GatherElements", lut, pixels, axis=1), INT64)


def scale_levels(g: GraphBuilder, pixels: str, config: PreprocessConfig) -> str:
    """int64 (N, P) levels -> float32 (N, 1, S, S) model input, via the runtime's own level table."""
    with g.step("scale"):
        levels = g.const(_scaled_levels(config.mean, config.std), np.float32)
        return g.op("Reshape", g.op("Gather", levels, pixels, axis=0), g.const([0, 1, config.size, config.size], np.int64))


def model_input(g: GraphBuilder, small: str, config: PreprocessConfig) -> str:
    """int64 (N, S, S) resized grey -> float32 (N, 1, S, S): equalized (when the model asks) and scaled."""
    pixels = g.op("Reshape", small, g.const([0, config.size * config.size], np.int64))
    if config.equalize:
        pixels = equalize_hist(g, pixels)
    return scale_levels(g, pixels, config)


def classify(g: GraphBuilder, classifier: onnx.ModelProto, x: str, temperature: float) -> tuple[str, str, str]:
    """The classifier inlined; returns (logits, probabilities, label): softmax(logits / temperature)."""
    with g.step("classify"):
        name = classifier.graph.input[0].name
        outputs = inline_model(g, classifier, "classifier/", {name: x})
        logits = outputs[classifier.graph.output[0].name]
        scaled = logits if temperature == 1.0 else g.op("Div", logits, g.scalar(temperature, np.float32))
        probabilities = g.op("Softmax", scaled, axis=1)
        return logits, probabilities, g.op("ArgMax", probabilities, axis=1, keepdims=0)


def name_outputs(g: GraphBuilder, tensors: dict[str, str]) -> None:
    for public, internal in tensors.items():
        g.nodes.append(helper.make_node("Identity", [internal], [public], name=f"output/{public}"))


def finish(g: GraphBuilder, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           doc: str) -> onnx.ModelProto:
    graph = g.graph(name, inputs, outputs)
    graph.doc_string = doc
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fer-edge")
    model.ir_version = IR_VERSION
    return model


# --- the crop model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifierSpec:
    """What the graphs need to know of a classifier: its ONNX model, labels, preprocessing, temperature."""

    model: onnx.ModelProto
    labels: tuple[str, ...]
    preprocess: PreprocessConfig
    temperature: float


CROP_OUTPUTS = ("probabilities", "label", "logits", "preprocessed")


def build_crop_model(spec: ClassifierSpec) -> onnx.ModelProto:
    """uint8 RGB crops (N, H, W, 3) -> probabilities (N, C), label (N), logits (N, C), preprocessed (N, 1, S, S)."""
    g = GraphBuilder()
    size = spec.preprocess.size
    gray = gray_bt601(g, "image")
    x = model_input(g, resize_square(g, gray, size), spec.preprocess)
    logits, probabilities, label = classify(g, spec.model, x, spec.temperature)
    name_outputs(g, {"probabilities": probabilities, "label": label, "logits": logits, "preprocessed": x})
    classes = len(spec.labels)
    return finish(
        g, "fer_crop",
        [tensor("image", UINT8, ["N", "H", "W", 3])],
        [tensor("probabilities", FLOAT, ["N", classes]), tensor("label", INT64, ["N"]),
         tensor("logits", FLOAT, ["N", classes]), tensor("preprocessed", FLOAT, ["N", 1, size, size])],
        "uint8 RGB face crops (N, H, W, 3), one size per batch -> calibrated probabilities, label, logits",
    )
