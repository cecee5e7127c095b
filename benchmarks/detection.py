"""``fer-bench detect``: whole-frame detection measured: crops, recall by face size, the 8-face
target, and end-to-end latency with the runtime's thread and spinning settings."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fer_bench.scenes import Truth, fer_scene, match, multi_face_frame, oracle_images, photo_faces
from fer_bench.stats import interleaved, percentiles
from fer_runtime import CropConfig, EmotionRecognizer, FaceDetector, resize
from fer_runtime.detector import decode, nms
from fer_runtime.frames import crop_gray, detector_blob
from fer_runtime.pipeline import crop_face

Progress = Callable[[str], None]

# The framings compared (scale x shift x square x align); the question: which crop
# around YuNet's box, square or not, with or without roll correction.
CROP_GRID = [
    CropConfig(scale=s, shift=d, square=sq, align=al)
    for s, d, sq, al in itertools.product((0.85, 0.95, 1.05, 1.15), (-0.15, -0.1, -0.05, 0.0), (True, False), (True, False))
]

# For reporting on PublicTest: the default framing (chosen on validation), without roll correction,
# not square, and YuNet's box as it is.
REPORT_GRID = [CropConfig(), CropConfig(align=False), CropConfig(square=False),
               CropConfig(scale=1.0, shift=0.0, square=False, align=False)]


def crop_name(c: CropConfig) -> str:
    return f"scale {c.scale:.2f}, shift {c.shift:+.2f}, {'square' if c.square else 'box'}, {'aligned' if c.align else 'upright'}"


def _inside(found: Sequence[Any], truth: Truth) -> Any:
    """The best-scoring detection whose centre lies in the pasted face (one face per frame)."""
    x0, y0, w, h = truth.box
    for det in found:
        cx, cy = det.box[0] + det.box[2] / 2, det.box[1] + det.box[3] / 2
        if x0 <= cx <= x0 + w and y0 <= cy <= y0 + h:
            return det
    return None


def crop_study(faces: np.ndarray, labels: np.ndarray, classifiers: dict[str, EmotionRecognizer], detector: FaceDetector,
               grid: Sequence[CropConfig] = CROP_GRID, seed: int = 0, max_angle: float = 10.0,
               progress: Progress = lambda _: None) -> dict[str, Any]:
    """Each face pasted into its own scene (random size 48-200 px, roll within +-``max_angle`` degrees), detected,
    cropped with every framing of ``grid`` and classified; accuracy per framing and classifier on the
    faces the detector found, beside the same faces as plain crops (the original 48x48 images) and
    the true framing cut from the scene (what pasting alone costs)."""
    rng = np.random.default_rng(seed)
    found_idx, crops, truth_crops, geometry, missed = [], [[] for _ in grid], [], [], []
    for i, face in enumerate(faces):
        if i % 250 == 0:
            progress(f"crops: scene {i}/{len(faces)}")
        frame, truth = fer_scene(face, rng, max_angle=max_angle)
        det = _inside(detector.detect(frame), truth)
        if det is None:
            missed.append(truth.w)
            continue
        found_idx.append(i)
        x, y, w, h = det.box
        geometry.append((truth.w / max(w, h), (truth.cy - (y + h / 2)) / h, truth.w))
        for k, cfg in enumerate(grid):
            crops[k].append(resize(crop_face(frame, det, cfg, "rgb"), 48))
        truth_crops.append(resize(crop_gray(frame, (truth.cx, truth.cy), (truth.w, truth.h), np.radians(-truth.angle), "rgb"), 48))
    idx = np.asarray(found_idx)
    y = labels[idx]
    result: dict[str, Any] = {"faces": len(faces), "detected": len(idx), "seed": seed, "max_angle": max_angle,
                              "missed_by_side": np.histogram(missed, bins=[48, 80, 120, 160, 201])[0].tolist(),
                              "geometry": _geometry(np.asarray(geometry)), "classifiers": {}}
    for name, rec in classifiers.items():
        progress(f"crops: classifying with {name}")
        acc = lambda batch: float((rec.predict_proba(np.stack(batch)).argmax(1) == y).mean())  # noqa: E731
        result["classifiers"][name] = {
            "plain": float((rec.predict_proba(faces[idx]).argmax(1) == y).mean()),
            "true_framing": acc(truth_crops),
            "framings": {crop_name(c): acc(crops[k]) for k, c in enumerate(grid)},
        }
    return result


def _geometry(g: np.ndarray) -> dict[str, float]:
    """How the pasted FER2013 square relates to YuNet's box: side / longer box side, vertical offset / box height."""
    return {"side_over_box_median": float(np.median(g[:, 0])), "dy_over_height_median": float(np.median(g[:, 1])),
            "side_over_box_iqr": [float(v) for v in np.percentile(g[:, 0], [25, 75])]}


def best_framing(study: dict[str, Any]) -> str:
    """The framing with the best mean accuracy over the study's classifiers."""
    names = list(next(iter(study["classifiers"].values()))["framings"])
    return max(names, key=lambda n: np.mean([c["framings"][n] for c in study["classifiers"].values()]))


def recall_by_width(detector: FaceDetector, widths: Sequence[int], placements: int = 6, seed: int = 0,
                    frame_size: tuple[int, int] = (240, 320)) -> dict[str, Any]:
    """YuNet's recall on the test photos' faces by face width at the network input (no resampling by
    the detector), with the false positives counted: the basis of ``DETECTABLE_PX``."""
    rng = np.random.default_rng(seed)
    faces = photo_faces(detector)
    rows = {}
    for width in widths:
        hits = total = fps = 0
        for _ in range(placements):
            frame, truths = multi_face_frame(faces, [width] * len(faces), rng, frame_size)
            blob = detector_blob(frame, "rgb", 1)
            boxes, scores, _ = decode(detector.run(blob), blob.shape[2:], detector.score_threshold)
            keep = nms(boxes, scores, detector.nms_threshold)
            owner, fp = match([tuple(b) for b in boxes[keep]], truths)
            hits += sum(o is not None for o in owner)
            total += len(truths)
            fps += fp
        rows[str(width)] = {"found": hits, "faces": total, "recall": hits / total, "false_positives": fps}
    return {"frame_size": list(frame_size), "placements": placements, "by_width": rows}


def eight_faces(detector: FaceDetector, widths: Sequence[int] = (32, 40, 52, 68, 90, 115, 145, 180), layouts: int = 10,
                seed: int = 0) -> dict[str, Any]:
    """The issue's target: 1280x720 frames with eight real faces 32-180 px wide, found with the defaults."""
    rng = np.random.default_rng(seed)
    faces = photo_faces(FaceDetector(min_face=12, max_size=4096))
    per_layout = []
    for _ in range(layouts):
        frame, truths = multi_face_frame(faces, list(widths), rng, (720, 1280))
        found = detector.detect(frame)
        owner, fp = match([f.box for f in found], truths)
        missed = [int(widths[j]) for j, o in enumerate(owner) if o is None]
        per_layout.append({"found": len(truths) - len(missed), "missed_widths": missed, "false_positives": fp})
    return {"widths": list(widths), "layouts": per_layout,
            "all_found": all(r["found"] == len(widths) for r in per_layout),
            "false_positives": sum(r["false_positives"] for r in per_layout), "detector": repr(detector)}


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int = 20) -> dict[str, dict[str, float]]:
    """p50/p90/p99 per call, the calls interleaved round by round in a shuffled order."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _, name in interleaved(list(calls), rounds, np.random.default_rng(0)):
        times[name].append(_timed(calls[name]))
    return {name: percentiles(t) for name, t in times.items()}


def one_face_frame(size: tuple[int, int] = (480, 640), face_width: int = 150) -> np.ndarray:
    """A frame of ``size`` (h, w) with one real face ``face_width`` px wide (the astronaut photo) in the middle."""
    from fer_bench.scenes import background, photo_window

    photo, box = photo_faces(FaceDetector(min_face=1, max_size=4096))[0]
    window, _ = photo_window(photo, box, face_width)
    frame = background(*size, np.random.default_rng(1))
    window = window[: size[0], : size[1]]
    y, x = (size[0] - window.shape[0]) // 2, (size[1] - window.shape[1]) // 2
    frame[y : y + window.shape[0], x : x + window.shape[1]] = window
    return frame


TASKS = ("predict_proba, one 170x150 crop", "detect, 640x480 frame, one face", "predict_proba, 64 crops")


def _settings_worker(model: str, threads: int, spinning: bool, rounds: int) -> dict[str, list[float]]:
    """In a fresh process: the three calls of :func:`settings_latency` timed ``rounds`` times each
    (64 crops: a tenth as often), after a warm-up; raw seconds per task."""
    frame = one_face_frame()
    crop = np.ascontiguousarray(frame[165:315, 235:405])  # 170x150 around the face
    rec = EmotionRecognizer(model, threads=threads, spinning=spinning, precision="named")
    if len(rec.detect(frame)) != 1:
        raise RuntimeError("the latency frame should hold exactly one detectable face")
    calls = dict(zip(TASKS, (lambda: rec.predict_proba(crop), lambda: rec.detect(frame),
                             lambda: rec.predict_proba([crop] * 64))))
    out: dict[str, list[float]] = {}
    for task, fn in calls.items():
        for _ in range(10):
            fn()
        out[task] = [_timed(fn) for _ in range(rounds if "64" not in task else max(5, rounds // 10))]
    return out


def settings_latency(models: Sequence[str], rounds: int = 200, blocks: int = 4,
                     progress: Progress = lambda _: None) -> dict[str, Any]:
    """Batch-1 latency, end to end, per model x threads (1, 2) x ORT spinning (off, on): predict_proba on
    a 170x150 crop, detect on a 640x480 frame with one face, and predict_proba on 64 crops (throughput).

    Each setting runs alone in a fresh process (spinning threads of one session would otherwise steal
    the CPU from the next), in ``blocks`` rounds of the settings in a shuffled order so that drift of
    the machine lands on all of them alike."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    settings = [(t, s) for t in (1, 2) for s in (False, True)]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for model in models:
        times: dict[tuple[int, bool], dict[str, list[float]]] = {k: {t: [] for t in TASKS} for k in settings}
        for b in range(blocks):
            progress(f"latency: {model}: block {b + 1}/{blocks}")
            for k in rng.permutation(len(settings)):
                threads, spinning = settings[k]
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    got = pool.submit(_settings_worker, model, threads, spinning, max(1, rounds // blocks)).result()
                for task, values in got.items():
                    times[settings[k]][task].extend(values)
        out[model] = {task: {f"threads={t}, spinning={'on' if s else 'off'}": percentiles(times[(t, s)][task])
                             for t, s in settings} for task in TASKS}
    return out


def per_face_latency(models: Sequence[str], rounds: int = 200) -> dict[str, Any]:
    """``predict_proba`` on one 170x150 colour crop, end to end (preprocessing, model, softmax), with the
    runtime's default settings, every model interleaved call by call (spinning is off by default, so
    no session's threads steal the CPU from the next)."""
    frame = one_face_frame()
    crop = np.ascontiguousarray(frame[165:315, 235:405])
    recs = {m: EmotionRecognizer(m, precision="named") for m in models}
    return time_interleaved({m: (lambda r: lambda: r.predict_proba(crop))(r) for m, r in recs.items()}, rounds)


def detector_latency(sizes: Sequence[tuple[int, int]] = ((240, 320), (480, 640), (720, 1280)), rounds: int = 100,
                     threads: Sequence[int] = (1, 2), min_faces: Sequence[int] = (20, 48, 72)) -> dict[str, Any]:
    """The detector alone (shrinking, YuNet, decoding, NMS) per frame size, ``min_face`` (which sets the
    shrink factor: 20 keeps the full size, 48 halves it, 72 thirds it) and thread count, interleaved."""
    out: dict[str, Any] = {}
    for t in threads:
        calls = {}
        for h, w in sizes:
            frame = one_face_frame((h, w), face_width=min(150, h // 3))
            for m in min_faces:
                det = FaceDetector(min_face=m, threads=t)
                wh, ww = det.working_size(h, w)
                calls[f"{w}x{h}, min_face={m} (detected at {ww}x{wh})"] = (lambda d, f: lambda: d.detect(f))(det, frame)
        out[f"threads={t}"] = time_interleaved(calls, rounds)
    return out


def decoder_parity(oracle_model: Path) -> dict[str, Any]:
    """Our NumPy decoding + NMS against OpenCV's ``cv2.FaceDetectorYN`` (the oracle; ``oracle_model`` is
    the OpenCV zoo's 640x640 YuNet, the same weights as the bundled file) on :func:`oracle_images`, at the
    same input size and thresholds: faces per image and the largest box, landmark and score differences."""
    import cv2

    ours = FaceDetector(min_face=1, max_size=640)
    oracle = cv2.FaceDetectorYN.create(str(oracle_model), "", (640, 640), ours.score_threshold, ours.nms_threshold, 5000)
    counts, box_d, mark_d, score_d = [], 0.0, 0.0, 0.0
    for rgb in oracle_images():
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        _, ref = oracle.detect(bgr)
        ref = np.zeros((0, 15), np.float32) if ref is None else ref[np.argsort(-ref[:, 14], kind="stable")]
        got = ours.detect(bgr, color_order="bgr")
        counts.append([len(got), len(ref)])
        for r, d in zip(ref, got):
            box_d = max(box_d, float(np.abs(np.subtract(d.box, r[:4])).max()))
            mark_d = max(mark_d, float(np.abs(np.ravel(d.landmarks) - r[4:14]).max()))
            score_d = max(score_d, abs(d.score - float(r[14])))
    return {"oracle": f"cv2.FaceDetectorYN, OpenCV {cv2.__version__}, {oracle_model.name}", "faces_ours_vs_opencv": counts,
            "same_counts": all(a == b for a, b in counts), "max_box_diff_px": box_d, "max_landmark_diff_px": mark_d,
            "max_score_diff": score_d}


def crops_markdown(study: dict[str, Any], top: int = 8) -> str:
    """The study as Markdown: the best framings by mean accuracy, with plain crops and the true framing."""
    names = list(study["classifiers"])
    ranked = sorted(study["classifiers"][names[0]]["framings"],
                    key=lambda n: -np.mean([study["classifiers"][c]["framings"][n] for c in names]))
    head = "| framing | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    row = lambda label, vals: f"| {label} | " + " | ".join(f"{v:.2%}" for v in vals) + " |\n"  # noqa: E731
    body = row("plain crops (the 48x48 faces themselves)", [study["classifiers"][c]["plain"] for c in names])
    body += row("true framing cut from the scene", [study["classifiers"][c]["true_framing"] for c in names])
    for n in ranked[:top]:
        body += row(n, [study["classifiers"][c]["framings"][n] for c in names])
    g = study["geometry"]
    return (f"{study['detected']} of {study['faces']} faces detected (missed, by pasted side 48-80/80-120/120-160/160-200 px: "
            f"{study['missed_by_side']}); the pasted square is {g['side_over_box_median']:.2f}x YuNet's longer box side "
            f"(median; IQR {g['side_over_box_iqr'][0]:.2f}-{g['side_over_box_iqr'][1]:.2f}).\n\n" + head + body)


def detect_markdown(result: dict[str, Any]) -> str:
    lines = []
    if "recall" in result:
        r = result["recall"]
        lines += [f"Recall by face width at the network input ({r['frame_size'][1]}x{r['frame_size'][0]} frames, "
                  f"{r['placements']} layouts of the six test faces):", "", "| width px | found | recall | false positives |",
                  "|---|---|---|---|"]
        lines += [f"| {w} | {v['found']}/{v['faces']} | {v['recall']:.1%} | {v['false_positives']} |" for w, v in r["by_width"].items()]
        lines.append("")
    if "parity" in result:
        p = result["parity"]
        if "skipped" in p:
            lines += [f"Decoder parity: skipped ({p['skipped']}).", ""]
        else:
            lines += [f"Decoder parity against {p['oracle']}: faces per image (ours, OpenCV) {p['faces_ours_vs_opencv']}; "
                      f"largest difference: boxes {p['max_box_diff_px']:.4f} px, landmarks {p['max_landmark_diff_px']:.4f} px, "
                      f"scores {p['max_score_diff']:.2e}.", ""]
    if "eight_faces" in result:
        e = result["eight_faces"]
        found = [r["found"] for r in e["layouts"]]
        lines += [f"Eight faces {e['widths'][0]}-{e['widths'][-1]} px wide in 1280x720 ({len(found)} layouts, defaults): "
                  f"found {found}, false positives {e['false_positives']}; all found: {e['all_found']}.", ""]
    if "detector_latency" in result:
        lines += ["Detector alone (resampling, YuNet, decoding, NMS), p50 / p90 ms:", "", "| frame | " +
                  " | ".join(result["detector_latency"]) + " |", "|---|" + "---|" * len(result["detector_latency"])]
        per_threads = list(result["detector_latency"].values())
        for name in per_threads[0]:
            lines.append(f"| {name} | " + " | ".join(f"{t[name]['p50_ms']:.2f} / {t[name]['p90_ms']:.2f}" for t in per_threads) + " |")
        lines.append("")
    if "per_face" in result:
        lines += ["`predict_proba` on one 170x150 crop, end to end, default settings, p50 / p90 ms:", "",
                  "| model | p50 | p90 |", "|---|---|---|"]
        lines += [f"| `{m}` | {p['p50_ms']:.2f} | {p['p90_ms']:.2f} |" for m, p in result["per_face"].items()]
        lines.append("")
    for model, tasks in result.get("settings_latency", {}).items():
        settings = list(next(iter(tasks.values())))
        lines += [f"`{model}`, end to end, p50 / p90 ms:", "", "| call | " + " | ".join(settings) + " |",
                  "|---|" + "---|" * len(settings)]
        for task, per in tasks.items():
            lines.append(f"| {task} | " + " | ".join(f"{per[k]['p50_ms']:.2f} / {per[k]['p90_ms']:.2f}" for k in settings) + " |")
        lines.append("")
    return "\n".join(lines)
