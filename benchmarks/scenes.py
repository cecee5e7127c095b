"""Whole frames built from known faces, so that detection and cropping can be scored.

Two kinds: FER2013 faces (48x48, gray) enlarged, rotated a little and pasted into a textured
scene, whose true framing is known (for choosing the crop); and the test photos in
``tests/data/photos`` (public-domain, not FER2013) pasted at chosen face widths (for recall and
false positives). Pillow does the resampling: the scenes are test input, not runtime code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from fer_bench.checkout import checkout_path

FACE_PHOTOS = ("astronaut.jpg", "grace_hopper.jpg", "cameraman.jpg")


@dataclass(frozen=True)
class Truth:
    """Where a known face lies in a composed frame: centre (x, y), size (w, h), roll in degrees."""

    cx: float
    cy: float
    w: float
    h: float
    angle: float = 0.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.cx - self.w / 2, self.cy - self.h / 2, self.w, self.h


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random gray scene with a little grain (uint8 RGB), different for every seed."""
    coarse = Image.fromarray(rng.integers(40, 220, (6, 8), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
    gray = np.clip(smooth + rng.normal(0, 6, (height, width)), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def paste_fer_face(face: np.ndarray, side: int, angle: float, frame: np.ndarray, rng: np.random.Generator) -> Truth:
    """Paste a 48x48 FER2013 face enlarged to ``side`` px and rotated by ``angle`` degrees
    (counter-clockwise on screen) at a random place of ``frame`` (modified in place)."""
    big = Image.fromarray(face).resize((side, side), Image.BICUBIC)
    mask = Image.new("L", (side, side), 255)
    big, mask = big.rotate(angle, Image.BICUBIC, expand=True), mask.rotate(angle, Image.BICUBIC, expand=True)
    h, w = frame.shape[:2]
    x = int(rng.integers(0, w - big.width + 1))
    y = int(rng.integers(0, h - big.height + 1))
    canvas = Image.fromarray(frame)
    canvas.paste(big.convert("RGB"), (x, y), mask.filter(ImageFilter.GaussianBlur(1)))
    frame[:] = np.asarray(canvas)
    return Truth(x + big.width / 2, y + big.height / 2, side, side, angle)


def fer_scene(face: np.ndarray, rng: np.random.Generator, sides: tuple[int, int] = (48, 200),
              max_angle: float = 10.0, frame_size: tuple[int, int] = (360, 480)) -> tuple[np.ndarray, Truth]:
    """One frame (uint8 RGB, ``frame_size`` (h, w)) holding one FER2013 face of random size and roll."""
    frame = background(*frame_size, rng)
    side = int(rng.integers(sides[0], sides[1] + 1))
    truth = paste_fer_face(face, side, float(rng.uniform(-max_angle, max_angle)), frame, rng)
    return frame, truth


def load_photo(name: str, flip: bool = False) -> np.ndarray:
    with Image.open(checkout_path("tests", "data", "photos", name)) as im:
        rgb = im.convert("RGB")
    return np.asarray(rgb.transpose(Image.FLIP_LEFT_RIGHT) if flip else rgb)


def photo_faces(detector: object) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """The test photos (and their mirror images) with the face box the detector finds in each at full
    size, where the faces are large and the boxes unambiguous."""
    out = []
    for name in FACE_PHOTOS:
        for flip in (False, True):
            img = load_photo(name, flip)
            found = detector.detect(img)  # type: ignore[attr-defined]
            if len(found) != 1:
                raise RuntimeError(f"expected one face in {name} (flip={flip}), found {len(found)}")
            out.append((img, found[0].box))
    return out


def photo_window(photo: np.ndarray, box: tuple[float, float, float, float], face_width: float,
                 context: float = 1.6) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The photo around its face (``context`` x the face's longer side, square where the photo allows),
    scaled so the face is ``face_width`` px wide, and the face box within that window."""
    x, y, w, h = box
    half = context * max(w, h) / 2
    x0, y0 = max(0, int(x + w / 2 - half)), max(0, int(y + h / 2 - half))
    x1, y1 = min(photo.shape[1], int(x + w / 2 + half)), min(photo.shape[0], int(y + h / 2 + half))
    scale = face_width / w
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    window = np.asarray(Image.fromarray(photo[y0:y1, x0:x1]).resize(size, Image.LANCZOS))
    return window, ((x - x0) * scale, (y - y0) * scale, w * scale, h * scale)


def multi_face_frame(faces: list[tuple[np.ndarray, tuple[float, float, float, float]]], widths: list[int],
                     rng: np.random.Generator, frame_size: tuple[int, int] = (720, 1280)) -> tuple[np.ndarray, list[Truth]]:
    """A frame with one face per width (face box widths in px), each pasted with a little of its photo
    around it at a random place inside its own cell of a shuffled 4-column grid, so that no two overlap."""
    frame = background(*frame_size, rng)
    cols = 4
    rows = -(-len(widths) // cols)
    cell_h, cell_w = frame_size[0] // rows, frame_size[1] // cols
    cells = rng.permutation(rows * cols)[: len(widths)]
    truths = []
    for k, (width, cell) in enumerate(zip(widths, cells)):
        photo, box = faces[k % len(faces)]
        window, (bx, by, bw, bh) = photo_window(photo, box, width)
        window = window[:cell_h, :cell_w]
        r, c = divmod(int(cell), cols)
        x = c * cell_w + int(rng.integers(0, cell_w - window.shape[1] + 1))
        y = r * cell_h + int(rng.integers(0, cell_h - window.shape[0] + 1))
        frame[y : y + window.shape[0], x : x + window.shape[1]] = window
        truths.append(Truth(x + bx + bw / 2, y + by + bh / 2, bw, bh))
    return frame, truths


def oracle_images() -> list[np.ndarray]:
    """640x640 RGB images for checking the decoder against ``cv2.FaceDetectorYN`` (whose YuNet file
    takes exactly 640x640): the three face photos stretched to 640x640, the three faceless ones, and
    one with the face photos tiled nine times at 60-260 px."""
    names = [*FACE_PHOTOS, "chelsea.jpg", "coffee.jpg", "gravel.jpg"]
    images = [np.asarray(Image.fromarray(load_photo(n)).resize((640, 640), Image.BICUBIC)) for n in names]
    tiled = np.full((640, 640, 3), 120, np.uint8)
    for i, name in enumerate(FACE_PHOTOS * 3):
        side = 60 + 25 * i
        r, c = divmod(i, 3)
        y, x = 10 + r * 210, 10 + c * 210
        tile = np.asarray(Image.fromarray(load_photo(name)).resize((side, side), Image.BICUBIC))
        tiled[y : y + side, x : x + side] = tile[: 640 - y, : 640 - x]
    return [*images, tiled]


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(found: list[tuple[float, float, float, float]], truths: list[Truth], threshold: float = 0.4) -> tuple[list[int | None], int]:
    """For each truth the index of the found box matching it best (IoU >= threshold) or None, and the
    number of found boxes matching no truth (false positives). Greedy, best IoU first."""
    pairs = sorted(((iou(f, t.box), i, j) for i, f in enumerate(found) for j, t in enumerate(truths)), reverse=True)
    owner: list[int | None] = [None] * len(truths)
    used: set[int] = set()
    for value, i, j in pairs:
        if value < threshold:
            break
        if owner[j] is None and i not in used:
            owner[j] = i
            used.add(i)
    return owner, len(found) - len(used)
