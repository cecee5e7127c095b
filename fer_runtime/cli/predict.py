"""``fer-predict``: find and classify the faces in image files, folders, videos, cameras and streams.

Images need ``pip install 'fer-edge[cli]'``; videos, cameras and URLs also ``fer-edge[video]``.
Photos and videos may be mixed in one run: every row has the columns of
:func:`fer_runtime.rows.columns` (with ``raw_p_<label>`` when the run holds video). Rows are
written as each image or frame is done (flushed), so a long run can be piped or killed without
losing what was computed. Every input gets at least one row: ``status`` "ok" (one row per face),
"no_face", or "error" with the reason.
"""

# No "from __future__ import annotations": typer reads the annotations of the command defined
# inside _build_app, where typer is imported lazily, so they must be evaluated there.
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional

from fer_runtime.cli import run_app
from fer_runtime.errors import FerError, MissingExtraError
from fer_runtime.extras import require

JPEG_QUALITY = 95  # annotated JPEGs: re-encoding at the usual 75 visibly smears the drawn text
ANNOTATED_VIDEO_SUFFIX = ".mp4"


class Source(NamedTuple):
    """One thing to process: an image, or a video source (``live``: a camera or stream)."""

    input: Any  # fer_runtime.app.Input
    video: bool = False
    live: bool = False
    camera: Optional[int] = None

    @property
    def name(self) -> str:
        """What the rows' ``source`` column says: an absolute path (a symlinked file keeps its own
        name), a URL, or "camera N"."""
        if self.camera is not None:
            return f"camera {self.camera}"
        from fer_runtime.app import is_uri

        return self.input.path if is_uri(self.input.path) else os.path.abspath(self.input.path)


def gather(paths: list[str], camera: Optional[int]) -> list[Source]:
    """Images and videos in the order given (the camera first), found by :func:`fer_runtime.app.find_inputs`."""
    from fer_runtime.app import Input, find_inputs
    from fer_runtime.video import is_url, is_video_path

    sources = [Source(Input(f"camera {camera}", Path(f"camera-{camera}")), True, True, camera)] \
        if camera is not None else []
    for item in find_inputs(paths):
        if is_url(item.path):
            sources.append(Source(item, video=True, live=True))
        else:
            sources.append(Source(item, video=is_video_path(item.path) and item.error is None))
    return sources


# --- images -----------------------------------------------------------------------------------


class Job(NamedTuple):
    """What every input is processed with."""

    recognizer: Any
    crops: bool
    max_pixels: Optional[int]
    annotate_to: Optional[Path]  # a folder (images, and videos as NAME.mp4) or one OUT.mp4 (one video)
    used_names: set  # annotated copies written so far
    inputs: frozenset  # the inputs, resolved, when annotating: never written over


def annotation_path(folder: Path, item: Any, used: set, inputs: frozenset, video: bool = False) -> Path:
    """Where the annotated copy of ``item`` goes: ``folder`` / its relative name (``-2``, ``-3``...
    added when two inputs share a name); videos get ``.mp4``, an image suffix Pillow cannot write
    ``.png`` appended. ``inputs`` (resolved paths) are never written over: OSError instead."""
    from fer_runtime.images import IMAGE_SUFFIXES

    out = folder / item.name
    if video:
        out = out.with_name(out.name + ANNOTATED_VIDEO_SUFFIX) if out.suffix != ANNOTATED_VIDEO_SUFFIX else out
    elif out.suffix.lower() not in IMAGE_SUFFIXES:
        out = out.with_name(out.name + ".png")
    stem, n = out.stem, 2
    while out in used:
        out, n = out.with_stem(f"{stem}-{n}"), n + 1
    used.add(out)
    if out.resolve() in inputs:
        raise OSError(f"refusing to overwrite an input with an annotated copy ({out}); "
                      "choose another --annotate folder")
    return out


def process_image(job: Job, source: Source) -> list[dict]:
    """The rows for one image file; a file that cannot be read or classified gives one error row
    (the reason without the path, which is in ``source``). When only its annotated copy cannot be
    written, its rows are kept, each with the reason in ``error``."""
    from fer_runtime.annotate import annotate
    from fer_runtime.app import image_rows
    from fer_runtime.images import load_image
    from fer_runtime.rows import status_row

    name = source.name
    if source.input.error:
        return [status_row(name, "error", error=source.input.error)]
    try:
        image = load_image(name, max_pixels=job.max_pixels)
        rows, faces = image_rows(job.recognizer, name, image, job.crops)
    except MissingExtraError:
        raise
    except (FerError, OSError) as exc:
        return [status_row(name, "error", error=str(exc).removeprefix(f"{name}: "))]
    if job.annotate_to is not None:
        try:
            out = annotation_path(job.annotate_to, source.input, job.used_names, job.inputs)
            _save(annotate(image, faces), out)
        except (OSError, ValueError) as exc:  # Pillow raises ValueError for formats it cannot write
            rows = [{**row, "error": f"annotated copy not written ({exc})"} for row in rows]
    return rows


def _save(image: Any, out: Path) -> None:
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out, quality=JPEG_QUALITY)


# --- the run ------------------------------------------------------------------------------------


def run(job: Job, sources: list[Source], sink: Any, video: Any, progress: bool) -> tuple[int, Optional[dict]]:
    """Process every source in order, writing its rows as soon as they are known; returns how many
    inputs failed and the first failure's row. ``video``: the :class:`~fer_runtime.cli.video.VideoJob`
    (None when no source is a video)."""
    from tqdm import tqdm

    from fer_runtime.cli.video import run_source

    failures, first = 0, None
    images = sum(not s.video for s in sources)
    with tqdm(total=images, unit="image", file=sys.stderr, disable=None if progress and images > 1 else True) as bar:
        for source in sources:
            if source.video:
                where = _video_annotation(job, source)
                error = run_source(video, source.camera if source.camera is not None else source.name,
                                   source.name, source.live, where)
                failed = [error] if error else []
            else:
                rows = process_image(job, source)
                bar.clear()  # rows and the bar may share a terminal
                sink.write(rows)
                bar.update()
                failed = rows[:1] if rows[0]["error"] else []  # a failed annotation marks every row
            if failed:
                failures, first = failures + 1, first or failed[0]
    sink.close()
    return failures, first


def _video_annotation(job: Job, source: Source) -> Optional[Path]:
    from fer_runtime.video import is_video_path

    if job.annotate_to is None or is_video_path(job.annotate_to):
        return job.annotate_to
    return annotation_path(job.annotate_to, source.input, job.used_names, job.inputs, video=True)


def _summary(failures: int, first: dict, total: int) -> str:
    more = f" (and {failures - 1} more)" if failures > 1 else ""
    return (f"{failures} of {total} inputs failed, see the rows with status 'error': "
            f"{first['source']}: {first['error']}{more}")


def list_models(models_dir: Optional[str]) -> str:
    """``--list-models``: every model that can be named, one line each."""
    from fer_runtime.bundled import known_models

    lines = [f"{'name':16s} {'precision':9s} {'where':8s} {'size':>8s} {'PublicTest':>10s}  description"]
    for m in known_models(models_dir):
        accuracy = "-" if m.public_test_accuracy is None else f"{100 * m.public_test_accuracy:.2f}%"
        name = f"{m.name} *" if m.default else m.name
        lines.append(f"{name:16s} {m.precision or '-':9s} {m.location:8s} {m.size_bytes / 1e6:6.2f} MB "
                     f"{accuracy:>10s}  {m.description}")
    lines.append("* the default. Checkout models load by name with --models-dir (or $FER_MODELS_DIR).")
    return "\n".join(lines)


def _check_options(sources: list[Source], crops: bool, annotate_to: Optional[Path], video_only: bool) -> None:
    import typer

    from fer_runtime.video import is_video_path

    videos = [s for s in sources if s.video]
    if videos and crops:
        raise typer.BadParameter("--crops is for images that are already face crops, not for video")
    if not videos and video_only:
        raise typer.BadParameter("--summary, --plot and --detect-every are for videos, cameras and streams")
    if annotate_to is None:
        return
    if is_video_path(annotate_to):
        if len(videos) != 1 or len(sources) != 1:
            raise typer.BadParameter("--annotate OUT.mp4 takes one video source; give a folder for several inputs")
        if not videos[0].live and Path(videos[0].name) == annotate_to.resolve():
            raise typer.BadParameter(f"--annotate {annotate_to} is the input video: choose another file")
    elif annotate_to.is_file():
        raise typer.BadParameter(f"--annotate {annotate_to} is a file; it takes a folder (or OUT.mp4 for one video)")


def _build_app() -> Any:
    require("fer-predict", ("typer", "PIL", "tqdm"), "cli")
    import typer

    from fer_runtime.app import detector_defaults
    from fer_runtime.images import DEFAULT_MAX_PIXELS

    det = detector_defaults()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def fer_predict(
        paths: Annotated[Optional[list[str]], typer.Argument(
            help="Image or video files, folders (searched recursively for both), glob patterns, or stream URLs "
                 "(rtsp://, http://...). Photos and videos may be mixed.", show_default=False)] = None,
        camera: Annotated[Optional[int], typer.Option(
            metavar="N", help="Read camera N (0: the first) until Ctrl-C; needs fer-edge[video].")] = None,
        crops: Annotated[bool, typer.Option(
            "--crops", help="Each image is already a face crop: classify it whole (one row per image, no detection).",
        )] = False,
        annotate_to: Annotated[Optional[Path], typer.Option(
            "--annotate", metavar="DIR|OUT.mp4",
            help="Write a copy of each input with its faces' boxes, labels and (videos) track ids drawn to DIR, under "
                 "the same relative name (videos as NAME.mp4); or, for one video source, to OUT.mp4.",
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
            help="Model name (see --list-models) or path to an .onnx file. Default: the bundled default.")] = "",
        tta: Annotated[str, typer.Option(
            help="Accuracy for time: 'flip' classifies each face and its mirror image (2 passes), 'crops' the face "
                 "shifted five ways and their mirrors (10 passes); 'none' one pass. See the README's model table.",
        )] = "none",
        ensemble: Annotated[str, typer.Option(
            metavar="NAME,NAME...", help="Average several models' probabilities (instead of --model), e.g. "
                                         "vgg-deep,vgg,vgg-taper.")] = "",
        precision: Annotated[str, typer.Option(
            help="'auto': of a model that comes in fp32 and int8 (NAME, NAME-int8), the faster on this CPU (int8 "
                 "where it has VNNI, AMX or ARM dot-product instructions, else timed once and cached); 'fp32' or "
                 "'int8' to choose; 'named': exactly the model(s) named. -v says which was loaded and why.")] = "auto",
        models_dir: Annotated[Optional[str], typer.Option(
            envvar="FER_MODELS_DIR", metavar="DIR",
            help="A source checkout's models/ folder, for models that are not in the wheel.")] = None,
        list_models_: Annotated[bool, typer.Option(
            "--list-models", help="List the models that can be named (precision, where, size, PublicTest) and exit.",
        )] = False,
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
        """Find the faces in each image and video frame and classify their expression (or, with --crops,
        classify each image whole).

        One row per face, or a row with status "no_face" or "error" (and the reason), written as each image or frame
        is done; the columns are the same for photos and videos (see the README, "Reading the output").
        The exit code is 1 if any input failed.
        """
        logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
        if list_models_:
            try:
                typer.echo(list_models(models_dir))
            except FerError as exc:
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                raise typer.Exit(1) from None
            return
        if json_out and csv_out:
            raise typer.BadParameter("choose one of --json and --csv")
        if detect and crops:
            raise typer.BadParameter("--detect and --crops contradict each other (detection is the default)")
        sources = gather(paths or [], camera)
        if not sources:
            typer.secho("error: no image or video files found", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        _check_options(sources, crops, annotate_to, summary or plot is not None or detect_every != 1)
        from fer_runtime.app import RecognizerOptions, make_recognizer

        if ensemble and model:
            raise typer.BadParameter("give --model or --ensemble, not both")
        options = RecognizerOptions(model or None, providers, threads or None, max_pixels or None, crops,
                                    {"min_face": min_face, "score_threshold": score_threshold,
                                     "nms_threshold": nms_threshold, "max_size": max_size}, models_dir,
                                    None if tta == "none" else tta,
                                    tuple(n.strip() for n in ensemble.split(",") if n.strip()), precision)
        try:
            recognizer = make_recognizer(options)
        except FerError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        code = _run(recognizer, sources, options, json_out, csv_out, annotate_to,
                    {"detect_every": detect_every, "smoothing_s": smoothing, "max_age_s": max_age},
                    summary, plot, not no_progress)
        raise typer.Exit(code)

    return app


def _run(recognizer: Any, sources: list[Source], options: Any, json_out: bool, csv_out: bool,
         annotate_to: Optional[Path], video_options: dict, summary: bool, plot: Optional[Path], progress: bool) -> int:
    """Process the sources into one sink; the exit code (1 if any input failed, 130 on Ctrl-C)."""
    import typer

    from fer_runtime.analyzer import VideoAnalyzer
    from fer_runtime.cli.video import Timeline, VideoJob
    from fer_runtime.rows import SINKS

    has_video = any(s.video for s in sources)
    sink = SINKS["json" if json_out else "csv" if csv_out else "table"](sys.stdout, recognizer.labels, raw=has_video)
    timeline = Timeline(recognizer.labels, series=plot is not None) if has_video and (summary or plot) else None
    video = VideoJob(VideoAnalyzer(recognizer.pipeline, **video_options), sink, timeline, progress) \
        if has_video else None
    inputs = frozenset(Path(s.name).resolve() for s in sources if not s.live) if annotate_to else frozenset()
    job = Job(recognizer, options.crops, options.max_pixels, annotate_to, set(), inputs)
    interrupted, failures, first = False, 0, None
    try:
        failures, first = run(job, sources, sink, video, progress)
    except KeyboardInterrupt:  # how a camera run ends: the rows are out; the summary and plot still come
        interrupted = True
    if timeline is not None and summary:
        print(timeline.summary(), file=sys.stderr)
    if timeline is not None and plot is not None:
        timeline.plot(plot)
    if first is not None:
        typer.secho(f"error: {_summary(failures, first, len(sources))}", fg=typer.colors.RED, err=True)
    return 130 if interrupted else 1 if failures else 0


def main() -> None:
    run_app(_build_app)
