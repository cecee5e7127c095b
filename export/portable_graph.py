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
from fer_runtime.preprocessing import GRAY_SHIFT, GRAY_WEIGHTS_RGB, PreprocessConfig, scaled_levels

OPSET = 18
IR_VERSION = 10
LEVELS = 256


# --- crop steps ----------------------------------------------------------------------------------

def gray_bt601(g: GraphBuilder, rgb: str) -> str:
    """uint8 (..., 3) RGB -> int32 (...) grey: (R*9798 + G*19235 + B*3735 + 2**14) >> 15, as to_gray.

    Computed as one float32 MatMul: every product and partial sum is a whole number below 2**24, so
    float32 holds it exactly whatever order the sum takes, and dividing by 2**15 then flooring is the shift."""
    with g.step("gray"):
        weights = g.const(GRAY_WEIGHTS_RGB.astype(np.float32)[:, None], np.float32)
        acc = g.op("MatMul", g.cast(rgb, FLOAT), weights)
        half = g.scalar(float(1 << (GRAY_SHIFT - 1)), np.float32)
        rounded = g.op("Add", g.op("Squeeze", acc, g.const([-1], np.int64)), half)
        return g.cast(g.op("Floor", g.op("Mul", rounded, g.scalar(1.0 / (1 << GRAY_SHIFT), np.float32))), INT32)


def arange(g: GraphBuilder, n: str) -> str:
    """0, 1, ..., n - 1 (int64) for an int64 scalar n."""
    return g.op("Range", g.scalar(0, np.int64), n, g.scalar(1, np.int64))


def _weights(g: GraphBuilder, i: str, j: str, n_in: str, n_out: int) -> tuple[str, str]:
    """The resampling weights of output pixels ``i`` over input pixels ``j`` (int64 tensors shaped to
    broadcast against each other and ``n_in``): whole-number float64 weights and their row sum."""
    out = g.scalar(n_out, np.int64)
    one, zero = g.scalar(1, np.int64), g.scalar(0, np.int64)
    # Area: output pixel i covers [i n_in, (i + 1) n_in), input pixel j covers [j n_out, (j + 1) n_out).
    lo, hi = g.op("Mul", i, n_in), g.op("Mul", g.op("Add", i, one), n_in)
    overlap = g.op("Sub", g.op("Min", hi, g.op("Mul", g.op("Add", j, one), out)), g.op("Max", lo, g.op("Mul", j, out)))
    area = g.op("Max", overlap, zero)
    # Bilinear: sample ((2 i + 1) n_in - n_out) / (2 n_out) between its two neighbours, edges clamped.
    twice = g.scalar(2 * n_out, np.int64)
    num = g.op("Sub", g.op("Mul", g.op("Add", g.op("Mul", i, g.scalar(2, np.int64)), one), n_in), out)
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


def axis_weights(g: GraphBuilder, n_in: str, n_out: int, transposed: bool = False) -> tuple[str, str]:
    """(weights, denominator) for one axis, as preprocessing.axis_weights: whole-number float64
    (n_out, n_in) weights (area overlaps in units of 1 / n_out when shrinking, the identity when equal;
    half-pixel bilinear fractions in units of 1 / (2 n_out) when enlarging) and their int64 row sum.
    ``transposed``: (n_in, n_out) instead, built that way rather than with a Transpose node (ONNX
    Runtime 1.24 fuses Transpose + MatMul into a FusedMatMul that has no float64 kernel)."""
    with g.step("weights"):
        out_axis, in_axis = (0, 1) if transposed else (1, 0)  # the axis each index vector is stretched along
        i = g.const(np.expand_dims(np.arange(n_out, dtype=np.int64), out_axis), np.int64)
        j = g.op("Unsqueeze", arange(g, n_in), g.const([in_axis], np.int64))
        return _weights(g, i, j, n_in, n_out)


def face_axis_weights(g: GraphBuilder, n_in: str, n_out: int, transposed: bool = False) -> tuple[str, str]:
    """axis_weights for F faces at once: ``n_in`` int64 (F,) -> (F, n_out, S) weights (or (F, S, n_out)),
    S the largest n_in, zero beyond each face's own n_in, and the (F,) denominators."""
    with g.step("weights"):
        out_axis, in_axis = (2, 1) if transposed else (1, 2)
        span = g.op("ReduceMax", n_in, keepdims=0)
        i = g.const(np.expand_dims(np.arange(n_out, dtype=np.int64), [0, in_axis]), np.int64)
        j = g.op("Unsqueeze", arange(g, span), g.const([0, out_axis], np.int64))
        per_face = g.op("Unsqueeze", n_in, g.const([1, 2], np.int64))
        weights, denominator = _weights(g, i, j, per_face, n_out)
        inside = g.op("Less", j, per_face)
        weights = g.op("Where", inside, weights, g.scalar(0.0, np.float64))
        return weights, g.op("Reshape", denominator, g.const([-1], np.int64))


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
        cols, col_den = axis_weights(g, g.dim(gray, 2), size, transposed=True)
        sums = g.op("MatMul", g.op("MatMul", rows, g.cast(gray, DOUBLE)), cols)
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
        lut = g.op("Clip", g.op("Round", g.op("Mul", above, scale)),
                   g.scalar(0.0, np.float32), g.scalar(255.0, np.float32))
        single_level = g.op("Equal", first_count, total)  # OpenCV leaves a one-level image unchanged
        lut = g.op("Where", single_level, g.const(np.arange(LEVELS, dtype=np.float32)[None], np.float32), lut)
        return g.cast(g.op("GatherElements", lut, pixels, axis=1), INT64)


def scale_levels(g: GraphBuilder, pixels: str, config: PreprocessConfig) -> str:
    """int64 (N, P) levels -> float32 (N, 1, S, S) model input, via the runtime's own level table."""
    with g.step("scale"):
        levels = g.const(scaled_levels(config.mean, config.std), np.float32)
        shape = g.const([0, 1, config.size, config.size], np.int64)
        return g.op("Reshape", g.op("Gather", levels, pixels, axis=0), shape)


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


# --- the frame model: detection ------------------------------------------------------------------

@dataclass(frozen=True)
class FrameSettings:
    """The runtime defaults the frame model fixes (FaceDetector and CropConfig defaults), stated in its metadata."""

    score_threshold: float
    nms_threshold: float
    min_face: int
    max_size: int
    detectable_px: int
    crop_scale: float
    crop_shift: float
    crop_detail: int
    level_angle: float = 1e-3  # radians: below this roll the crop is cut without interpolation

    @classmethod
    def from_runtime(cls) -> FrameSettings:
        """The values the Python runtime uses by default, read from it rather than copied."""
        import inspect

        from fer_runtime.app import detector_defaults
        from fer_runtime.detector import DETECTABLE_PX
        from fer_runtime.frames import crop_gray
        from fer_runtime.pipeline import CropConfig

        crop = CropConfig()
        if not (crop.square and crop.align):
            raise ValueError("the frame model implements square, eye-levelled crops (CropConfig's defaults)")
        detail = inspect.signature(crop_gray).parameters["detail"].default
        return cls(**detector_defaults(), detectable_px=DETECTABLE_PX, crop_scale=crop.scale, crop_shift=crop.shift,
                   crop_detail=detail)


STRIDES = (8, 16, 32)


def shrink_blocks(g: GraphBuilder, image: str, k: str, planes: bool) -> str:
    """uint8 or int32 (H, W) or planes (C, H, W) -> float32 (H // k, W // k) or (C, H // k, W // k): means
    of k x k blocks, as frames.shrink (block sums in int32, then times float32(1 / k^2))."""
    with g.step("shrink"):
        first = 1 if planes else 0
        h, w = g.op("Div", g.dim(image, first), k), g.op("Div", g.dim(image, first + 1), k)
        axes = [1, 2] if planes else [0, 1]
        cut = g.op("Slice", image, g.const([0, 0], np.int64), g.vec(g.op("Mul", h, k), g.op("Mul", w, k)),
                   g.const(axes, np.int64))
        head = [g.dim(image, 0)] if planes else []
        blocks = g.op("Reshape", g.cast(cut, INT32), g.vec(*head, h, k, w, k), allowzero=1)
        sums = g.op("ReduceSum", blocks, g.const([first + 1, first + 3], np.int64), keepdims=0)
        k_sq = g.cast(g.op("Mul", k, k), DOUBLE)
        inv = g.cast(g.op("Div", g.scalar(1.0, np.float64), k_sq), FLOAT)
        return g.op("Mul", g.cast(sums, FLOAT), inv)


def working_scale(g: GraphBuilder, height: str, width: str, s: FrameSettings) -> str:
    """The whole shrink factor k, as FaceDetector.shrink_factor."""
    with g.step("working_size"):
        longest = g.op("Max", height, width)
        fits = g.op("Div", g.op("Add", longest, g.scalar(s.max_size - 1, np.int64)), g.scalar(s.max_size, np.int64))
        floor = max(1, s.min_face // s.detectable_px)
        return g.op("Min", g.scalar(257, np.int64), g.op("Max", fits, g.scalar(floor, np.int64)))


def detector_blob(g: GraphBuilder, frame: str, k: str) -> tuple[str, str, str]:
    """uint8 RGB (H, W, 3) -> float32 (1, 3, H', W') BGR blob, zero-padded to multiples of 32 (at least
    32), as frames.detector_blob; also the padded height and width."""
    with g.step("blob"):
        # Reorder to B, G, R planes and pad while still uint8 (a quarter of the bytes to move), then convert.
        planes = g.op("Gather", g.op("Transpose", frame, perm=[2, 0, 1]), g.const([2, 1, 0], np.int64), axis=0)
        h, w = g.op("Div", g.dim(frame, 0), k), g.op("Div", g.dim(frame, 1), k)
        thirty_two = g.scalar(32, np.int64)

        def padded(n: str) -> str:
            return g.op("Max", thirty_two, g.op("Mul", g.op("Div", g.op("Add", n, g.scalar(31, np.int64)), thirty_two),
                                               thirty_two))

        ph, pw = padded(h), padded(w)
        zero = g.scalar(0, np.int64)
        pads = g.vec(zero, zero, zero, zero, g.op("Sub", ph, h), g.op("Sub", pw, w))
        full = g.child()
        full_out = full.cast(full.op("Pad", planes, pads), FLOAT)
        small = g.child()
        small_out = small.op("Pad", shrink_blocks(small, planes, k, planes=True), pads)
        is_full = g.op("Equal", k, g.scalar(1, np.int64))
        image = g.op("If", is_full,
                     then_branch=full.graph("full_size", [], [tensor(full_out, FLOAT, None)]),
                     else_branch=small.graph("shrunk", [], [tensor(small_out, FLOAT, None)]))
        return g.op("Unsqueeze", image, g.const([0], np.int64)), ph, pw


def decode_stride(g: GraphBuilder, raw: dict[str, str], stride: int, ph: str, pw: str) -> tuple[str, str, str]:
    """One stride of YuNet's outputs -> boxes (n, 4) x, y, w, h, scores (n,), landmarks (n, 5, 2) in blob
    pixels, as detector.decode (every cell; the score filter follows)."""
    with g.step(f"decode_{stride}"):
        s = g.scalar(stride, np.int64)
        sf = g.scalar(float(stride), np.float32)
        rows, cols = g.op("Div", ph, s), g.op("Div", pw, s)
        cell = g.op("Range", g.scalar(0, np.int64), g.op("Mul", rows, cols), g.scalar(1, np.int64))
        gx, gy = g.op("Mod", cell, cols), g.op("Div", cell, cols)
        cells = g.cast(g.op("Concat", g.op("Unsqueeze", gx, g.const([1], np.int64)),
                            g.op("Unsqueeze", gy, g.const([1], np.int64)), axis=1), FLOAT)  # (n, 2)

        def squeezed(name: str) -> str:
            return g.op("Squeeze", raw[f"{name}_{stride}"], g.const([0], np.int64))

        zero, one = g.scalar(0.0, np.float32), g.scalar(1.0, np.float32)
        cls = g.op("Clip", g.op("Squeeze", squeezed("cls"), g.const([1], np.int64)), zero, one)
        obj = g.op("Clip", g.op("Squeeze", squeezed("obj"), g.const([1], np.int64)), zero, one)
        score = g.op("Sqrt", g.op("Mul", cls, obj))
        bbox, kps = squeezed("bbox"), squeezed("kps")
        offset, log_size = g.op("Split", bbox, g.const([2, 2], np.int64), axis=1, outputs=2)
        size = g.op("Mul", g.cast(g.op("Exp", g.cast(log_size, DOUBLE)), FLOAT), sf)  # exp in float64, as decode
        centre = g.op("Mul", g.op("Add", cells, offset), sf)
        boxes = g.op("Concat", g.op("Sub", centre, g.op("Div", size, g.scalar(2.0, np.float32))), size, axis=1)
        points = g.op("Reshape", kps, g.const([-1, 5, 2], np.int64))
        marks = g.op("Mul", g.op("Add", points, g.op("Unsqueeze", cells, g.const([1], np.int64))), sf)
        return boxes, score, marks


def suppress(g: GraphBuilder, boxes: str, scores: str, iou_threshold: float) -> str:
    """Greedy non-maximum suppression (ONNX NonMaxSuppression): kept indices, best score first."""
    with g.step("nms"):
        x, y, w, h = g.op("Split", boxes, g.const([1, 1, 1, 1], np.int64), axis=1, outputs=4)
        corners = g.op("Concat", y, x, g.op("Add", y, h), g.op("Add", x, w), axis=1)  # (y1, x1, y2, x2)
        count = g.op("Unsqueeze", g.dim(boxes, 0), g.const([0], np.int64))
        selected = g.op("NonMaxSuppression", g.op("Unsqueeze", corners, g.const([0], np.int64)),
                        g.op("Unsqueeze", scores, g.const([0, 1], np.int64)), count,
                        g.const([iou_threshold], np.float32))
        return g.op("Squeeze", g.op("Slice", selected, g.const([2], np.int64), g.const([3], np.int64),
                                    g.const([1], np.int64)), g.const([1], np.int64))


def detect_faces(g: GraphBuilder, frame: str, yunet: onnx.ModelProto, s: FrameSettings) -> tuple[str, str, str]:
    """uint8 RGB frame -> boxes (F, 4), scores (F,), landmarks (F, 5, 2) in frame pixels, as FaceDetector.detect."""
    height, width = g.dim(frame, 0), g.dim(frame, 1)
    k = working_scale(g, height, width, s)
    blob, ph, pw = detector_blob(g, frame, k)
    with g.step("yunet"):
        raw = inline_model(g, yunet, "yunet/", {yunet.graph.input[0].name: blob})
    parts = [decode_stride(g, raw, stride, ph, pw) for stride in STRIDES]
    with g.step("filter"):
        boxes = g.op("Concat", *[p[0] for p in parts], axis=0)
        scores = g.op("Concat", *[p[1] for p in parts], axis=0)
        marks = g.op("Concat", *[p[2] for p in parts], axis=0)
        searchable = g.op("GreaterOrEqual", g.op("Min", height, width), k)  # a sliver thinner than k: nothing
        keep = g.op("And", g.op("GreaterOrEqual", scores, g.scalar(s.score_threshold, np.float32)), searchable)
        boxes, scores, marks = (g.op("Compress", t, keep, axis=0) for t in (boxes, scores, marks))
    kept = suppress(g, boxes, scores, s.nms_threshold)
    with g.step("to_frame"):
        kf = g.cast(k, FLOAT)
        boxes = g.op("Mul", g.op("Gather", boxes, kept, axis=0), kf)
        marks = g.op("Mul", g.op("Gather", marks, kept, axis=0), kf)
        scores = g.op("Gather", scores, kept, axis=0)
        wide = g.op("GreaterOrEqual", _pick(g, boxes, 2), g.scalar(float(s.min_face), np.float32))
        return tuple(g.op("Compress", t, wide, axis=0) for t in (boxes, scores, marks))  # type: ignore[return-value]


# --- the frame model: crops ----------------------------------------------------------------------

def _f64(g: GraphBuilder, value: float) -> str:
    return g.scalar(value, np.float64)


def _pick(g: GraphBuilder, tensor_: str, index: int) -> str:
    """Element ``index`` along the last axis: a scalar of a (4,) box, a (F,) vector of (F, 4) boxes."""
    return g.op("Gather", tensor_, g.scalar(index, np.int64), axis=-1)


def face_frame(g: GraphBuilder, box: str, marks: str, s: FrameSettings) -> tuple[str, str, str, str, str, str]:
    """The crop geometry in float64, as pipeline.crop_face and the start of frames.crop_gray, for a (4,) box
    or (F, 4) boxes: centre (cx, cy), side (whole pixels, int64), cos and sin of the eye line's roll, and
    whether it is level. cos and sin are the eye vector over its length, where crop_gray takes
    cos(atan2(dy, dx)): the two agree to a float64 rounding or two, below what float32 (in which the crop
    uses them) can tell apart in all but rare cases."""
    with g.step("framing"):
        box64, marks64 = g.cast(box, DOUBLE), g.cast(marks, DOUBLE)
        x, y, w, h = (_pick(g, box64, i) for i in range(4))
        side = g.op("Mul", _f64(g, s.crop_scale), g.op("Max", w, h))
        cx = g.op("Add", x, g.op("Div", w, _f64(g, 2.0)))
        cy = g.op("Add", g.op("Add", y, g.op("Div", h, _f64(g, 2.0))), g.op("Mul", _f64(g, s.crop_shift), h))
        pixels = g.cast(g.op("Max", _f64(g, 1.0), g.op("Round", side)), INT64)  # max(1, round(side)), half to even
        right_eye, left_eye = (g.op("Gather", marks64, g.scalar(i, np.int64), axis=-2) for i in (0, 1))
        d = g.op("Sub", left_eye, right_eye)
        dx, dy = _pick(g, d, 0), _pick(g, d, 1)
        # cos and sin of atan2(dy, dx) as the eye line's direction (atan2(0, 0) = 0: level).
        length = g.op("Sqrt", g.op("Add", g.op("Mul", dx, dx), g.op("Mul", dy, dy)))
        still = g.op("Equal", length, _f64(g, 0.0))
        safe = g.op("Where", still, _f64(g, 1.0), length)
        cos = g.op("Where", still, _f64(g, 1.0), g.op("Div", dx, safe))
        sin = g.op("Where", still, _f64(g, 0.0), g.op("Div", dy, safe))
        # |atan2(dy, dx)| < limit  <=>  dx > 0 and |dy| < tan(limit) dx (or no eye line at all)
        small = g.op("And", g.op("Greater", dx, _f64(g, 0.0)),
                     g.op("Less", g.op("Abs", dy), g.op("Mul", _f64(g, float(np.tan(s.level_angle))), dx)))
        level = g.op("Or", small, still)
        return cx, cy, pixels, cos, sin, level


def crop_region(g: GraphBuilder, cx: str, cy: str, side: str, cos: str, sin: str, height: str,
                width: str) -> tuple[str, ...]:
    """The frame region (x0, y0, x1, y1; int64) a crop of ``side`` pixels rotated by the eye angle needs,
    as frames.crop_gray (one pixel of margin before, two after; the nearest edge pixel when outside)."""
    with g.step("region"):
        side64 = g.cast(side, DOUBLE)
        # abs(cos) * cw / 2 + abs(sin) * ch / 2: the half extents; equal on both axes for a square crop
        half = g.op("Add", g.op("Div", g.op("Mul", g.op("Abs", cos), side64), _f64(g, 2.0)),
                    g.op("Div", g.op("Mul", g.op("Abs", sin), side64), _f64(g, 2.0)))
        zero, one, two = g.scalar(0, np.int64), g.scalar(1, np.int64), g.scalar(2, np.int64)

        def low(c: str, r: str) -> str:
            return g.op("Max", zero, g.op("Sub", g.cast(g.op("Floor", g.op("Sub", c, r)), INT64), one))

        def high(c: str, r: str, limit: str) -> str:
            return g.op("Min", limit, g.op("Add", g.cast(g.op("Ceil", g.op("Add", c, r)), INT64), two))

        x0, y0 = low(cx, half), low(cy, half)
        x1, y1 = high(cx, half, width), high(cy, half, height)
        outside = g.op("Or", g.op("GreaterOrEqual", x0, x1), g.op("GreaterOrEqual", y0, y1))
        nx0 = g.op("Min", g.op("Max", x0, zero), g.op("Sub", width, one))
        ny0 = g.op("Min", g.op("Max", y0, zero), g.op("Sub", height, one))
        x0, y0 = g.op("Where", outside, nx0, x0), g.op("Where", outside, ny0, y0)
        x1 = g.op("Where", outside, g.op("Add", nx0, one), x1)
        y1 = g.op("Where", outside, g.op("Add", ny0, one), y1)
        return x0, y0, x1, y1


def level_crop(g: GraphBuilder, frame: str, cx: str, cy: str, side: str, region: tuple[str, ...]) -> str:
    """A level crop by whole pixels (no interpolation), edges repeated: int32 (side, side) grey."""
    x0, y0, x1, y1 = region
    with g.step("level_crop"):
        positions = g.cast(g.op("Range", g.scalar(0, np.int64), side, g.scalar(1, np.int64)), DOUBLE)
        middle = g.op("Div", g.cast(g.op("Sub", side, g.scalar(1, np.int64)), DOUBLE), _f64(g, 2.0))

        def indices(c: str, lo: str, hi: str) -> str:
            # floor(c + arange(side) - (side - 1) / 2), left to right as NumPy evaluates it, clamped to the region
            at = g.cast(g.op("Floor", g.op("Sub", g.op("Add", c, positions), middle)), INT64)
            return g.op("Min", g.op("Max", at, lo), g.op("Sub", hi, g.scalar(1, np.int64)))

        rows, cols = indices(cy, y0, y1), indices(cx, x0, x1)
        pixels = g.op("Gather", g.op("Gather", frame, rows, axis=0), cols, axis=1)
        return gray_bt601(g, pixels)


def rotated_sampling(g: GraphBuilder, side: str, region: tuple[str, ...], detail: int) -> tuple[str, str, str]:
    """How frames.crop_gray samples a rotated crop: the whole box-averaging factor k (int64), the step
    between samples in averaged pixels (float64) and the samples per side n (int64). Elementwise: one face
    or all of them."""
    x0, y0, x1, y1 = region
    one = g.scalar(1, np.int64)
    with g.step("sampling"):
        room = g.op("Min", g.op("Sub", y1, y0), g.op("Sub", x1, x0))
        factor = g.op("Min", g.op("Div", side, g.scalar(detail, np.int64)), g.scalar(257, np.int64))
        k = g.op("Max", one, g.op("Min", factor, room))
        kd, side64 = g.cast(k, DOUBLE), g.cast(side, DOUBLE)
        step = g.op("Max", _f64(g, 1.0), g.op("Div", g.op("Div", side64, kd), _f64(g, float(detail))))
        n = g.cast(g.op("Max", _f64(g, 1.0), g.op("Round", g.op("Div", g.op("Div", side64, kd), step))), INT64)
        return k, step, n


def rotated_crop(g: GraphBuilder, frame: str, cx: str, cy: str, cos: str, sin: str, region: tuple[str, ...],
                 k: str, step: str, n: str) -> str:
    """A crop along the eye line, as frames.crop_gray's rotated path: the region in grey, box-averaged by
    ``k``, then sampled bilinearly n x n: int32 (n, n) grey."""
    x0, y0, x1, y1 = region
    one = g.scalar(1, np.int64)
    with g.step("rotated_crop"):
        rgb = g.op("Slice", frame, g.vec(y0, x0), g.vec(y1, x1), g.const([0, 1], np.int64))
        small = shrink_blocks(g, gray_bt601(g, rgb), k, planes=False)
        kd = g.cast(k, DOUBLE)
        # sample offsets u = (arange(n) - (n - 1) / 2) * (k * step), in float32 as NumPy computes them
        centred = g.op("Sub", g.cast(g.op("Range", g.scalar(0, np.int64), n, one), FLOAT),
                       g.cast(g.op("Div", g.cast(g.op("Sub", n, one), DOUBLE), _f64(g, 2.0)), FLOAT))
        u = g.op("Mul", centred, g.cast(g.op("Mul", kd, step), FLOAT))
        u_row = g.op("Unsqueeze", u, g.const([0], np.int64))
        v_col = g.op("Unsqueeze", u, g.const([1], np.int64))
        cos32, sin32 = g.cast(cos, FLOAT), g.cast(sin, FLOAT)
        half_k = g.cast(g.op("Div", g.cast(g.op("Sub", k, one), DOUBLE), _f64(g, 2.0)), FLOAT)
        k32 = g.cast(k, FLOAT)

        def source(c: str, along_u: str, along_v: str, sign_v: str, origin: str) -> str:
            start = g.cast(g.op("Sub", c, _f64(g, 0.5)), FLOAT)
            at = g.op(sign_v, g.op("Add", start, g.op("Mul", along_u, u_row)), g.op("Mul", along_v, v_col))
            return g.op("Div", g.op("Sub", g.op("Sub", at, g.cast(origin, FLOAT)), half_k), k32)

        sx = source(cx, cos32, sin32, "Sub", x0)
        sy = source(cy, sin32, cos32, "Add", y0)
        return bilinear(g, small, sx, sy)


def bilinear(g: GraphBuilder, image: str, sx: str, sy: str) -> str:
    """float32 (h, w) sampled at float32 (sx, sy), clamped to its edges, as frames._bilinear (weights
    in float64), rounded half to even: int32."""
    with g.step("bilinear"):
        h, w = g.dim(image, 0), g.dim(image, 1)
        one, zero = g.scalar(1, np.int64), g.scalar(0, np.int64)
        flat = g.cast(g.op("Reshape", image, g.const([-1], np.int64)), DOUBLE)

        def axis(src: str, n: str) -> tuple[str, str, str]:
            last = g.op("Sub", n, one)
            clamped = g.op("Min", g.op("Max", src, g.scalar(0.0, np.float32)), g.cast(last, FLOAT))
            lo = g.op("Min", g.cast(clamped, INT64), g.op("Max", g.op("Sub", n, g.scalar(2, np.int64)), zero))
            frac = g.op("Sub", g.cast(clamped, DOUBLE), g.cast(lo, DOUBLE))
            return lo, g.op("Min", g.op("Add", lo, one), last), frac

        x0, x1, fx = axis(sx, w)
        y0, y1, fy = axis(sy, h)

        def at(yy: str, xx: str) -> str:
            return g.op("Gather", flat, g.op("Add", g.op("Mul", yy, w), xx), axis=0)

        one_d = _f64(g, 1.0)
        top = g.op("Add", g.op("Mul", at(y0, x0), g.op("Sub", one_d, fx)), g.op("Mul", at(y0, x1), fx))
        bottom = g.op("Add", g.op("Mul", at(y1, x0), g.op("Sub", one_d, fx)), g.op("Mul", at(y1, x1), fx))
        out = g.op("Add", g.op("Mul", top, g.op("Sub", one_d, fy)), g.op("Mul", bottom, fy))
        return g.cast(g.op("Clip", g.op("Round", out), _f64(g, 0.0), _f64(g, 255.0)), INT32)


def face_crops(g: GraphBuilder, frame: str, boxes: str, marks: str, size: int, s: FrameSettings) -> str:
    """The crop framing and roll correction of the runtime, then the resize: int64 (F, size, size) grey.
    The geometry and the resize weights are computed for all faces at once; a Loop then cuts each face
    (the crops differ in size) with as few nodes per face as it can."""
    with g.step("crops"):
        height, width = g.dim(frame, 0), g.dim(frame, 1)
        cx, cy, side, cos, sin, level = face_frame(g, boxes, marks, s)
        region = crop_region(g, cx, cy, side, cos, sin, height, width)
        k, step, n = rotated_sampling(g, side, region, s.crop_detail)
        cut = g.op("Where", level, side, n)  # the crop's side before the resize
        rows, row_den = face_axis_weights(g, cut, size)
        cols, _ = face_axis_weights(g, cut, size, transposed=True)
        denominator = g.op("Mul", row_den, row_den)  # square crops: the same weights on both axes

        body = g.child()
        i = "crops/face_index"
        one = body.op("Unsqueeze", i, body.const([0], np.int64))
        after = body.op("Add", one, body.scalar(1, np.int64))

        def this(vector: str) -> str:
            return body.op("Gather", vector, i, axis=0)

        per_face = (cx, cy, side, cos, sin, level, k, step, n, cut)
        fx, fy, fside, fcos, fsin, flevel, fk, fstep, fn, fcut = (this(v) for v in per_face)
        fregion = tuple(this(v) for v in region)
        level_branch, rotated_branch = body.child(), body.child()
        level_out = level_crop(level_branch, frame, fx, fy, fside, fregion)
        rotated_out = rotated_crop(rotated_branch, frame, fx, fy, fcos, fsin, fregion, fk, fstep, fn)
        gray = body.op("If", flevel,
                       then_branch=level_branch.graph("level", [], [tensor(level_out, INT32, None)]),
                       else_branch=rotated_branch.graph("rotated", [], [tensor(rotated_out, INT32, None)]))
        with body.step("resize"):
            size_vec = body.const([size], np.int64)
            span = body.op("Unsqueeze", fcut, body.const([0], np.int64))
            face_rows = body.op("Slice", rows, body.op("Concat", one, body.const([0, 0], np.int64), axis=0),
                                body.op("Concat", after, size_vec, span, axis=0))
            face_cols = body.op("Slice", cols, body.op("Concat", one, body.const([0, 0], np.int64), axis=0),
                                body.op("Concat", after, span, size_vec, axis=0))
            stacked = body.cast(body.op("Unsqueeze", gray, body.const([0], np.int64)), DOUBLE)
            sums = body.op("MatMul", body.op("MatMul", face_rows, stacked), face_cols)
            rounded = round_ratio(body, body.cast(sums, INT64), this(denominator))
            crop = body.op("Squeeze", rounded, body.const([0], np.int64))
        cond_out = body.op("Identity", "crops/cond")
        body_graph = body.graph("face", [tensor(i, INT64, []), tensor("crops/cond", BOOL, [])],
                                [tensor(cond_out, BOOL, []), tensor(crop, INT64, [size, size])])
        return g.op("Loop", g.dim(boxes, 0), "", body=body_graph)


# --- the frame model -----------------------------------------------------------------------------

FRAME_OUTPUTS = ("boxes", "scores", "landmarks", "probabilities", "labels", "logits", "crops")


def build_frame_model(spec: ClassifierSpec, yunet: onnx.ModelProto, settings: FrameSettings) -> onnx.ModelProto:
    """uint8 RGB frame (H, W, 3) -> per face: boxes (F, 4) x, y, w, h, scores (F), landmarks (F, 5, 2),
    probabilities (F, C), labels (F), logits (F, C) and the resized grey crops (F, S, S) uint8."""
    g = GraphBuilder()
    size = spec.preprocess.size
    boxes, scores, marks = detect_faces(g, "frame", yunet, settings)
    crops = face_crops(g, "frame", boxes, marks, size, settings)
    x = model_input(g, crops, spec.preprocess)
    logits, probabilities, labels = classify(g, spec.model, x, spec.temperature)
    name_outputs(g, {"boxes": boxes, "scores": scores, "landmarks": marks, "probabilities": probabilities,
                     "labels": labels, "logits": logits, "crops": g.cast(crops, UINT8)})
    classes = len(spec.labels)
    return finish(
        g, "fer_frame",
        [tensor("frame", UINT8, ["H", "W", 3])],
        [tensor("boxes", FLOAT, ["F", 4]), tensor("scores", FLOAT, ["F"]), tensor("landmarks", FLOAT, ["F", 5, 2]),
         tensor("probabilities", FLOAT, ["F", classes]), tensor("labels", INT64, ["F"]),
         tensor("logits", FLOAT, ["F", classes]), tensor("crops", UINT8, ["F", size, size])],
        "one uint8 RGB frame (H, W, 3) -> the faces in it: boxes, detector scores, landmarks, expressions",
    )
