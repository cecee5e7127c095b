"""``fer-predict``: find and classify the faces in image files, folders, videos, cameras and streams.

Images need ``pip install 'fer-edge[cli]'``; videos, cameras and URLs also ``fer-edge[video]``
(rows per face and frame: see :mod:`fer_runtime.video_cli`). Rows are written as each image or
frame is done (flushed), so a long run can be piped or killed without losing what was computed.
Every input file gets at least one row: ``status`` "ok" (one row per face), "no_face", or
"error" with the reason.
"""

# No "from __future__ import annotations": typer reads the annotations of the command defined
# inside _build_app, where typer is imported lazily, so they must be evaluated there.
import csv
import inspect
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional, TextIO

from fer_runtime.errors import FerError, MissingExtraError
from fer_runtime.extras import require, run_reporting_missing_extras
from fer_runtime.images import IMAGE_SUFFIXES
from fer_runtime.video import VIDEO_SUFFIXES, is_url, is_video_path

ROW_KEYS = ("file", "status", "face", "box", "detector_score", "label", "score", "probabilities", "error")
BOX_COLOR = (0, 255, 0)
JPEG_QUALITY = 95  # annotated JPEGs: re-encoding at the usual 75 visibly smears the drawn text


# --- inputs ---------------------------------------------------------------------------------


class Input(NamedTuple):
    """One file to process: its path, its name relative to the folder it was found in (the name
    its annotated copy gets), and an error already known (e.g. an unreadable folder)."""

    path: Path
    name: Path
    error: str | None = None


def _walk(root: Path) -> Iterator[Input]:
    """Image files under ``root``, sorted, following directory symlinks but each real folder once
    (a symlink loop ends there); folders that cannot be listed come out as errors."""
    seen: set[str] = set()
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                path = Path(dirpath, name)
                yield Input(path, path.relative_to(root))
    for exc in unreadable:
        path = Path(exc.filename or root)
        yield Input(path, path.relative_to(root) if path.is_relative_to(root) else Path(path.name),
                    f"cannot list the folder ({exc.strerror or exc})")


def iter_images(paths: list[Path]) -> Iterator[Input]:
    """Files as given (whatever their suffix); folders searched recursively for image and video files."""
    for path in paths:
        if path.is_dir():
            yield from _walk(path)
        else:
            yield Input(path, Path(path.name))


# --- rows -----------------------------------------------------------------------------------


def make_row(file: str, status: str, *, face: int | None = None, box: Any = None, detector_score: float | None = None,
             prediction: Any = None, error: str | None = None) -> dict[str, Any]:
    """One output row; every key of :data:`ROW_KEYS` is present (None where it does not apply)."""
    return {
        "file": file,
        "status": status,
        "face": face,
        "box": None if box is None else [int(v) for v in box],
        "detector_score": None if detector_score is None else round(float(detector_score), 4),
        "label": None if prediction is None else prediction.label,
        "score": None if prediction is None else round(prediction.score, 4),
        "probabilities": None if prediction is None else {k: round(v, 4) for k, v in prediction.probabilities.items()},
        "error": error,
    }


class RowWriter:
    """Writes rows to a text stream as they come: :meth:`start` (header), then :meth:`write` per image, flushed."""

    def __init__(self, stream: TextIO, labels: tuple[str, ...], with_boxes: bool = True) -> None:
        self.stream, self.labels, self.with_boxes = stream, labels, with_boxes

    def start(self) -> None:
        self.stream.flush()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.write_row(row)
        self.stream.flush()

    def write_row(self, row: dict[str, Any]) -> None:
        raise NotImplementedError


class JsonLinesWriter(RowWriter):
    """One JSON object per row and line (JSON Lines)."""

    def write_row(self, row: dict[str, Any]) -> None:
        self.stream.write(json.dumps(row) + "\n")


class CsvWriter(RowWriter):
    """A header, then one line per row: the box as x, y, w, h and one column per label's probability."""

    def __init__(self, stream: TextIO, labels: tuple[str, ...], with_boxes: bool = True) -> None:
        super().__init__(stream, labels, with_boxes)
        self._csv = csv.writer(stream, lineterminator="\n")

    def start(self) -> None:
        self._csv.writerow(["file", "status", "face", "x", "y", "w", "h", "detector_score", "label", "score",
                            *self.labels, "error"])
        super().start()

    def write_row(self, row: dict[str, Any]) -> None:
        box = row["box"] or [None] * 4
        probs = row["probabilities"] or {}
        self._csv.writerow([row["file"], row["status"], row["face"], *box, row["detector_score"], row["label"],
                            row["score"], *(probs.get(lab) for lab in self.labels), row["error"]])


class TableWriter(RowWriter):
    """Aligned columns for reading; the file comes last so that long paths are shown whole."""

    def start(self) -> None:
        probs = " ".join(f"{lab[:7]:>7s}" for lab in self.labels)
        self.stream.write(f"{self._where('face', 'box x,y,w,h', 'det')}{'label':9s} {'score':>5s}  {probs}  file\n")
        super().start()

    def _where(self, face: str, box: str, det: str) -> str:
        return f"{face:>4s} {box:>19s} {det:>5s}  " if self.with_boxes else ""

    def write_row(self, row: dict[str, Any]) -> None:
        blank_probs = " " * (8 * len(self.labels) - 1)
        if row["status"] == "ok":
            box = ",".join(map(str, row["box"])) if row["box"] else ""
            det = "" if row["detector_score"] is None else f"{row['detector_score']:5.3f}"
            where = self._where("" if row["face"] is None else str(row["face"]), box, det)
            probs = " ".join(f"{row['probabilities'][lab]:7.3f}" for lab in self.labels)
            note = f"  ({row['error']})" if row["error"] else ""
            self.stream.write(f"{where}{row['label']:9s} {row['score']:5.3f}  {probs}  {row['file']}{note}\n")
        elif row["status"] == "no_face":
            self.stream.write(f"{self._where('-', '', '')}{'no face':9s} {'':5s}  {blank_probs}  {row['file']}\n")
        else:
            reason = f"{row['file']}: {row['error']}"
            self.stream.write(f"{self._where('-', '', '')}{'error':9s} {'':5s}  {blank_probs}  {reason}\n")


WRITERS: dict[str, type[RowWriter]] = {"table": TableWriter, "json": JsonLinesWriter, "csv": CsvWriter}


# --- annotation -----------------------------------------------------------------------------


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def annotate(image: Any, marks: list[tuple[Any, str]]) -> Any:
    """A PIL RGB copy of ``image`` (uint8 array) with each (box or None, text) drawn: the box
    outlined and the text on a filled tag above it (or at the top left when there is no box)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(im)
    line = max(2, round(max(im.size) / 300))
    font = _font(max(11, round(max(im.size) / 40)))
    for box, text in marks:
        x, y = (0, 0) if box is None else box[:2]
        if box is not None:
            draw.rectangle([x, y, max(x, x + box[2] - 1), max(y, y + box[3] - 1)], outline=BOX_COLOR, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y - th if box is not None and y >= th else y
        draw.rectangle([x, ty, x + tw, ty + th], fill=BOX_COLOR)
        draw.text((x + 2 - left, ty + 2 - top), text, fill=(0, 0, 0), font=font)
    return im


def annotation_path(folder: Path, item: Input, used: set[Path], inputs: frozenset[Path]) -> Path:
    """Where the annotated copy of ``item`` goes: ``folder`` / its relative name (``-2``, ``-3``...
    added when two inputs share a name); a suffix Pillow cannot write gets ``.png`` appended.
    ``inputs`` (resolved paths) are never written over: OSError instead."""
    out = folder / item.name
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        out = out.with_name(out.name + ".png")
    stem, n = out.stem, 2
    while out in used:
        out, n = out.with_stem(f"{stem}-{n}"), n + 1
    used.add(out)
    if out.resolve() in inputs:
        raise OSError(f"refusing to overwrite an input with an annotated copy ({out}); "
                      "choose another --annotate folder")
    return out


def _save(im: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, quality=JPEG_QUALITY)


# --- processing -----------------------------------------------------------------------------


class Job(NamedTuple):
    """What every file is processed with."""

    recognizer: Any
    crops: bool
    max_pixels: int | None
    annotate_to: Path | None
    used_names: set[Path]  # annotated copies written so far
    inputs: frozenset[Path]  # the inputs, resolved, when annotating: never written over


def _tag(prediction: Any) -> str:
    return f"{prediction.label} {prediction.score:.2f}"


def _predict(job: Job, file: str, image: Any) -> tuple[list[dict[str, Any]], list[tuple[Any, str]]]:
    """The rows for one loaded image and what to draw on it."""
    if job.crops:
        pred = job.recognizer.predict_one(image)
        return [make_row(file, "ok", prediction=pred)], [(None, _tag(pred))]
    faces = job.recognizer.detect(image)
    if not faces:
        return [make_row(file, "no_face")], []
    rows = [make_row(file, "ok", face=i, box=f.box, detector_score=f.score, prediction=f.prediction)
            for i, f in enumerate(faces)]
    return rows, [(f.box, _tag(f.prediction)) for f in faces]


def process(job: Job, item: Input) -> list[dict[str, Any]]:
    """The rows for one input file; a file that cannot be read or classified gives one error row
    (the reason without the path, which is in ``file``). When only its annotated copy cannot be
    written, its rows are kept, each with the reason in ``error``."""
    from fer_runtime.images import load_image

    file = os.path.abspath(item.path)  # absolute, but a symlinked file keeps its own name
    if item.error:
        return [make_row(file, "error", error=item.error)]
    try:
        image = load_image(file, max_pixels=job.max_pixels)
        rows, marks = _predict(job, file, image)
    except MissingExtraError:
        raise
    except (FerError, OSError) as exc:
        return [make_row(file, "error", error=str(exc).removeprefix(f"{file}: "))]
    if job.annotate_to is not None:
        try:
            _save(annotate(image, marks), annotation_path(job.annotate_to, item, job.used_names, job.inputs))
        except (OSError, ValueError) as exc:  # Pillow raises ValueError for formats it cannot write
            rows = [{**row, "error": f"annotated copy not written ({exc})"} for row in rows]
    return rows


def _make_recognizer(model: str, providers: str, threads: int, max_pixels: int | None, crops: bool,
                     detector_options: dict[str, Any]) -> Any:
    """The recognizer, and unless ``crops`` its detector made now (not on first use), so that a
    model or provider problem stops the run before it starts."""
    from fer_runtime.detector import FaceDetector
    from fer_runtime.recognizer import EmotionRecognizer

    session = {"providers": providers, "threads": threads or None}
    detector = None if crops else FaceDetector(max_pixels=max_pixels, **detector_options, **session)
    return EmotionRecognizer(model or None, max_pixels=max_pixels, detector=detector, **session)


def run(job: Job, items: list[Input], writer: RowWriter, progress: bool) -> tuple[int, dict[str, Any] | None]:
    """Process every input, writing its rows as soon as they are known; returns how many files
    failed and the first failure's row."""
    from tqdm import tqdm

    failures, first = 0, None
    writer.start()
    with tqdm(total=len(items), unit="image", file=sys.stderr, disable=None if progress else True) as bar:
        for item in items:
            rows = process(job, item)
            bar.clear()  # rows and the bar may share a terminal
            writer.write(rows)
            bar.update()
            if rows[0]["error"]:  # a failed file has one error row; a failed annotation marks every row
                failures, first = failures + 1, first or rows[0]
    return failures, first


def _summary(failures: int, first: dict[str, Any], total: int) -> str:
    more = f" (and {failures - 1} more)" if failures > 1 else ""
    return (f"{failures} of {total} files failed, see the rows with status 'error': "
            f"{first['file']}: {first['error']}{more}")


# --- the command ----------------------------------------------------------------------------


def _detector_defaults() -> dict[str, Any]:
    """FaceDetector's own defaults, so the CLI's cannot drift from the library's."""
    from fer_runtime.detector import FaceDetector

    params = inspect.signature(FaceDetector).parameters
    return {name: params[name].default for name in ("min_face", "score_threshold", "nms_threshold", "max_size")}


def _split_inputs(paths: list[str], camera: int | None) -> tuple[list[Input], list[tuple[Any, str, bool]]]:
    """Image inputs, and video sources as (source, name, live) in the order given: the camera
    first, then files (absolute paths) and URLs as they come."""
    videos: list[tuple[Any, str, bool]] = [(camera, f"camera {camera}", True)] if camera is not None else []
    images = []
    for p in paths:
        if is_url(p):
            videos.append((p, p, True))
            continue
        for item in iter_images([Path(p)]):
            if is_video_path(item.path) and not item.error:
                name = os.path.abspath(item.path)
                videos.append((name, name, False))
            else:
                images.append(item)
    return images, videos


def _run_videos(recognizer: Any, videos: list[tuple[Any, str, bool]], fmt: str, options: dict[str, Any],
                annotate_to: Path | None, summary: bool, plot: Path | None, progress: bool) -> int:
    """Every video source in turn (track ids restart for each); 1 if any failed."""
    from fer_runtime.analyzer import VideoAnalyzer
    from fer_runtime.video_cli import Timeline, VideoJob, VideoRowWriter, run_source

    if annotate_to is not None and (len(videos) > 1 or not is_video_path(annotate_to)):
        _bad("--annotate takes one OUT.mp4 (or .avi, .mkv) for one video source")
    if annotate_to is not None and any(not live and Path(name) == annotate_to.resolve() for _, name, live in videos):
        _bad(f"--annotate {annotate_to} is the input video: choose another file")
    analyzer = VideoAnalyzer(recognizer.pipeline, **options)
    writer = VideoRowWriter(sys.stdout, recognizer.labels, fmt)
    timeline = Timeline(recognizer.labels, series=plot is not None) if summary or plot else None
    job = VideoJob(analyzer, writer, recognizer.labels, timeline, annotate_to, progress)
    writer.start()
    errors, interrupted = [], False
    try:
        for source, name, live in videos:
            if (error := run_source(job, source, name, live)) is not None:
                errors.append(error)
    except KeyboardInterrupt:  # how a camera run ends: the rows are out; the summary and plot still come
        interrupted = True
    if timeline is not None and summary:
        print(timeline.summary(), file=sys.stderr)
    if timeline is not None and plot is not None:
        timeline.plot(plot)
    for error in errors:
        print(f"error: {error['source']}: {error['error']}", file=sys.stderr)
    return 130 if interrupted else 1 if errors else 0


def _bad(message: str) -> None:
    import typer

    raise typer.BadParameter(message)


def _build_app() -> Any:
    require("fer-predict", ("typer", "PIL", "tqdm"), "cli")
    import typer

    from fer_runtime.images import DEFAULT_MAX_PIXELS

    det = _detector_defaults()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def fer_predict(
        paths: Annotated[Optional[list[str]], typer.Argument(
            help="Image or video files, folders (searched recursively for both), or stream URLs (rtsp://, http://...).",
            show_default=False)] = None,
        camera: Annotated[Optional[int], typer.Option(
            metavar="N", help="Read camera N (0: the first) until Ctrl-C; needs fer-edge[video].")] = None,
        crops: Annotated[bool, typer.Option(
            "--crops", help="Each image is already a face crop: classify it whole (one row per image, no detection).",
        )] = False,
        annotate_to: Annotated[Optional[Path], typer.Option(
            "--annotate", metavar="DIR|OUT.mp4",
            help="Images: write a copy of each, its face boxes drawn with their labels and probabilities, to DIR "
                 "under the same relative name. Video: write OUT.mp4 with boxes, track ids and labels drawn.",
        )] = None,
        detect_every: Annotated[int, typer.Option(
            min=1, help="Video: detect faces on every N-th frame only, carrying the boxes between (faster).")] = 1,
        smoothing: Annotated[float, typer.Option(
            min=0.0, metavar="SECONDS", help="Video: time constant for smoothing each face's probabilities (0: off).",
        )] = 0.5,
        max_age: Annotated[float, typer.Option(
            min=0.0, metavar="SECONDS", help="Video: a face unseen for longer than this gets a new track id.")] = 1.0,
        summary: Annotated[bool, typer.Option(
            "--summary", help="Video: print per track (on stderr) frames seen, time span, dominant emotion and shares.",
        )] = False,
        plot: Annotated[Optional[Path], typer.Option(
            metavar="OUT.png", help="Video: draw each track's emotions over time to a PNG (needs matplotlib).",
        )] = None,
        json_out: Annotated[bool, typer.Option(
            "--json", help="Print JSON Lines (one object per row) instead of a table.")] = False,
        csv_out: Annotated[bool, typer.Option(
            "--csv", help="Print CSV (a header, then one line per row) instead of a table.")] = False,
        min_face: Annotated[int, typer.Option(
            min=1, help="Smallest face to find, in image pixels; raising it makes detection faster.",
        )] = det["min_face"],
        score_threshold: Annotated[float, typer.Option(
            min=0.0, max=1.0, help="Least detector confidence for a face.")] = det["score_threshold"],
        nms_threshold: Annotated[float, typer.Option(
            min=0.0, max=1.0, help="Overlap (IoU) above which the weaker of two face boxes is dropped.",
        )] = det["nms_threshold"],
        max_size: Annotated[int, typer.Option(
            min=32, help="Images are shrunk to at most this many pixels on their longer side for detection.",
        )] = det["max_size"],
        max_pixels: Annotated[int, typer.Option(
            min=0, help="Refuse images over this many pixels (width x height) before decoding them; 0: no limit.",
        )] = DEFAULT_MAX_PIXELS,
        model: Annotated[str, typer.Option(
            help="Bundled model name or path to an .onnx file. Default: the bundled default.")] = "",
        providers: Annotated[str, typer.Option(
            help="'auto', or a comma-separated list such as 'cuda,cpu'.")] = "auto",
        threads: Annotated[int, typer.Option(
            min=0, help="ONNX Runtime threads per model (0: its default).")] = 0,
        no_progress: Annotated[bool, typer.Option(
            "--no-progress", help="No progress bar (one is shown on stderr only when stderr is a terminal).",
        )] = False,
        detect: Annotated[bool, typer.Option(
            "--detect", hidden=True, help="Accepted for old scripts: detection is the default now.")] = False,
        verbose: Annotated[bool, typer.Option(
            "--verbose", "-v", help="Debug logs on stderr (sessions, providers, threads).")] = False,
    ) -> None:
        """Find the faces in each image and classify their expression (or, with --crops, classify each image).

        One row per face, or a row with status "no_face" or "error" (and the reason), written as each image is done.
        The exit code is 1 if any file failed.
        """
        logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
        if json_out and csv_out:
            raise typer.BadParameter("choose one of --json and --csv")
        if detect and crops:
            raise typer.BadParameter("--detect and --crops contradict each other (detection is the default)")
        images, videos = _split_inputs(paths or [], camera)
        if not images and not videos:
            typer.secho("error: no image or video files found", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        if images and videos:
            raise typer.BadParameter("images and videos give rows of different columns: pass them in separate runs")
        if videos and crops:
            raise typer.BadParameter("--crops is for images that are already face crops, not for video")
        if not videos and (summary or plot or detect_every != 1):
            raise typer.BadParameter("--summary, --plot and --detect-every are for videos, cameras and streams")
        limit = max_pixels or None
        options = {"min_face": min_face, "score_threshold": score_threshold, "nms_threshold": nms_threshold,
                   "max_size": max_size}
        try:
            recognizer = _make_recognizer(model, providers, threads, limit, crops, options)
        except (FerError, ValueError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        fmt = "json" if json_out else "csv" if csv_out else "table"
        if videos:
            video = {"detect_every": detect_every, "smoothing_s": smoothing, "max_age_s": max_age}
            code = _run_videos(recognizer, videos, fmt, video, annotate_to, summary, plot, not no_progress)
            raise typer.Exit(code)
        if annotate_to is not None and annotate_to.is_file():
            raise typer.BadParameter(f"--annotate {annotate_to} is a file; for images it takes a folder")
        items = images
        writer_cls = WRITERS[fmt]
        writer = writer_cls(sys.stdout, recognizer.labels, with_boxes=not crops)
        inputs = frozenset(item.path.resolve() for item in items) if annotate_to else frozenset()
        job = Job(recognizer, crops, limit, annotate_to, set(), inputs)
        failures, first = run(job, items, writer, progress=not no_progress and len(items) > 1)
        if first is not None:
            typer.secho(f"error: {_summary(failures, first, len(items))}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)

    return app


def run_app(build: Any) -> None:
    """Build a typer app and run it; a missing extra (raised while building or running) is one line
    on stderr and exit code 2. Click, under typer, already turns a closed stdout (`fer-predict
    photos | head`) and Ctrl-C into a quiet exit."""
    run_reporting_missing_extras(lambda: build()())


def main() -> None:
    run_app(_build_app)
