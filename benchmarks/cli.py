"""``fer-bench``: accuracy and latency of the PyTorch model vs ONNX Runtime, side by side.

    fer-bench                 # both, on the bundled default model and its PyTorch twin
    fer-bench --quick         # the same in under a minute
    fer-bench accuracy --model model.onnx --checkpoint best.pt --data fer2013.csv
    fer-bench latency --batch-sizes 1,32 --threads 1
    fer-bench arch vgg-small vgg-small:widths=24-48-96-192   # latency of architectures before training
    fer-bench portable        # the portable ONNX graphs against the NumPy path
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from fer_bench.checkout import checkout_path

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=__doc__)

DATA_HINT = ("To measure accuracy, pass --data PATH or set FER2013_PATH to Kaggle's fer2013.csv (or .csv.gz) from the "
             "'Challenges in Representation Learning: Facial Expression Recognition' competition")

ModelOpt = Annotated[str, typer.Option("--model", help="Model name (the wheel's, or models/registry.json's in a checkout) or .onnx path (default: the bundled default).")]
CkptOpt = Annotated[Optional[Path], typer.Option(help="The fer-train checkpoint the model was exported from (default: models/NAME/best.pt of the source checkout).")]
DataOpt = Annotated[Optional[Path], typer.Option(envvar="FER2013_PATH", help="FER2013 source for the accuracy part.")]
SplitOpt = Annotated[str, typer.Option(help="Labelled split of --data to score (PublicTest, Training or PrivateTest).")]
BatchOpt = Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")]
ThreadOpt = Annotated[str, typer.Option("--threads", help="Comma-separated CPU thread counts.")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Batch sizes 1, 8, 32 only and shorter timing: under a minute.")]
OutOpt = Annotated[Path, typer.Option("--out-dir", "-o", help="Where fer_bench.json, .md and .png go.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar.")]
# The OpenCV zoo's YuNet (the same weights as the bundled detector), beside the project checkout.
ORACLE_YUNET = checkout_path("..", "shared", "thirdparty", "yunet", "yunet_s_640_640.onnx")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class BenchRun:
    """What one accuracy and/or latency run measures; the commands below differ only in these."""

    model: str = ""
    checkpoint: Path | None = None
    data: Path | None = None
    split: str = "PublicTest"
    batch_sizes: str = ""
    threads: str = "1,2"
    quick: bool = False
    out_dir: Path = Path("bench-results")
    progress: bool = True
    accuracy: bool = True
    latency: bool = True
    require_data: bool = False  # fail without FER2013 (fer-bench accuracy) instead of skipping with a note


_VERBOSE = False  # set by the global -v (fer-bench -v COMMAND ...)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.DEBUG if _VERBOSE else logging.WARNING, format="%(message)s")


def _run(run: BenchRun) -> None:
    _setup_logging()
    from fer_bench.backends import BenchError, make_backends
    from fer_bench.env import describe, environment
    from fer_bench.report import terminal, write_all
    from fer_bench.stats import parse_int_list
    from fer_bench.suite import run_accuracy, run_latency
    from fer_runtime import DEFAULT_MODEL, FerError, PreprocessConfig
    from fer_train.data import DataError, load_fer2013

    try:
        sizes = parse_int_list(run.batch_sizes, "--batch-sizes") if run.batch_sizes else ([1, 8, 32] if run.quick else [1, 8, 32, 128, 256])
        thread_counts = parse_int_list(run.threads, "--threads")
    except ValueError as exc:
        _fail(str(exc), 2)
    model = run.model or DEFAULT_MODEL
    env = environment()
    result: dict[str, Any] = {"command": shlex.join(["fer-bench", *sys.argv[1:]]), "environment": env}
    from tqdm import tqdm

    bar = tqdm(total=None, bar_format="{desc}", disable=not run.progress, leave=False)
    step = bar.set_description_str
    try:
        backends, info = make_backends(model, run.checkpoint)
        result["model"] = info
        pcfg = PreprocessConfig.from_dict(info["preprocess"])
        if run.accuracy:
            try:
                part = load_fer2013(run.data).split(run.split)
            except (DataError, ValueError) as exc:
                message = f"{exc}. {DATA_HINT}" if isinstance(exc, DataError) else str(exc)
                if run.require_data:
                    _fail(message)
                result["accuracy_skipped"] = message
            else:
                result["accuracy"] = {"split": run.split, **run_accuracy(backends, part.images, part.labels, pcfg, step)}
        if run.latency:
            budget, min_runs = (0.12, 5) if run.quick else (0.6, 10)
            result["latency"] = run_latency(backends, backends[0].model, pcfg, sizes, thread_counts,
                                            budget_s=budget, min_runs=min_runs, progress=step)
    except (BenchError, FerError) as exc:
        bar.close()
        _fail(str(exc))
    bar.close()
    typer.echo(describe(env))
    typer.echo(terminal(result))
    paths = write_all(result, run.out_dir)
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs from every part (give it before the command: fer-bench -v detect).")]


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    model: ModelOpt = "",
    checkpoint: CkptOpt = None,
    data: DataOpt = None,
    split: SplitOpt = "PublicTest",
    batch_sizes: BatchOpt = "",
    threads: ThreadOpt = "1,2",
    quick: QuickOpt = False,
    out_dir: OutOpt = Path("bench-results"),
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Accuracy and latency of a model's PyTorch twin and its ONNX Runtime variants (no subcommand, or `all`: both).

    The accuracy part needs FER2013 (--data or FER2013_PATH) and is skipped, with a note, without it.
    """
    global _VERBOSE
    _VERBOSE = verbose
    if ctx.invoked_subcommand is None:
        _run(BenchRun(model, checkpoint, data, split, batch_sizes, threads, quick, out_dir, progress))


@app.command("all")
def all_(model: ModelOpt = "", checkpoint: CkptOpt = None, data: DataOpt = None, split: SplitOpt = "PublicTest",
         batch_sizes: BatchOpt = "", threads: ThreadOpt = "1,2", quick: QuickOpt = False,
         out_dir: OutOpt = Path("bench-results"), progress: ProgressOpt = True) -> None:
    """Accuracy (when FER2013 is reachable) and latency: the same as fer-bench with no subcommand."""
    _run(BenchRun(model, checkpoint, data, split, batch_sizes, threads, quick, out_dir, progress))


@app.command()
def accuracy(model: ModelOpt = "", checkpoint: CkptOpt = None, data: DataOpt = None, split: SplitOpt = "PublicTest",
             out_dir: OutOpt = Path("bench-results"), progress: ProgressOpt = True) -> None:
    """Accuracy, macro-F1, per-class recall, argmax agreement and max |logit diff| of every backend on a labelled split."""
    _run(BenchRun(model, checkpoint, data, split, threads="1", out_dir=out_dir, progress=progress, latency=False,
                  require_data=True))


@app.command()
def latency(model: ModelOpt = "", checkpoint: CkptOpt = None, batch_sizes: BatchOpt = "", threads: ThreadOpt = "1,2",
            quick: QuickOpt = False, out_dir: OutOpt = Path("bench-results"), progress: ProgressOpt = True) -> None:
    """p50/p90/p99 latency and images/s per backend, batch size and thread count; model-only and end to end."""
    _run(BenchRun(model, checkpoint, batch_sizes=batch_sizes, threads=threads, quick=quick, out_dir=out_dir,
                  progress=progress, accuracy=False))


@app.command("arch")
def arch(
    candidates: Annotated[list[str], typer.Argument(help="Architectures to compare, the first as reference: registry "
                                                     "names, optionally with overrides, e.g. vgg-small:widths=24-48-96-192; or model:NAME, a bundled trained model (its fp32 and int8 files).")],
    threads: ThreadOpt = "1,2",
    rounds: Annotated[int, typer.Option(help="Timed calls per candidate, precision and thread count.")] = 300,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Also write arch.json and arch.md here.")] = None,
) -> None:
    """Batch-1 latency of untrained architectures (random weights), fp32 and int8 ONNX, before training them;
    or of bundled trained models, interleaved call by call.

    fer-bench arch vgg-small vgg-small:widths=20-40-80-160 vgg-small:widths=24-48-96-192 --threads 1

    fer-bench arch model:vgg-medium model:vgg-taper --threads 1
    """
    import json

    from fer_bench.candidates import markdown, run_candidates
    from fer_bench.env import environment
    from fer_bench.stats import parse_int_list
    from fer_export import ExportError

    _setup_logging()
    try:
        thread_counts = parse_int_list(threads, "--threads")
        result = run_candidates(candidates, thread_counts, rounds, progress=lambda m: typer.echo(m, err=True))
    except ValueError as exc:  # a bad spec or option: usage
        _fail(str(exc), 2)
    except ExportError as exc:  # a candidate that does not export or quantize
        _fail(str(exc), 1)
    result = {"command": shlex.join(["fer-bench", *sys.argv[1:]]), "environment": environment(), **result}
    table = markdown(result)
    typer.echo(table, nl=False)
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "arch.json").write_text(json.dumps(result, indent=1))
        (out_dir / "arch.md").write_text(f"`{result['command']}`\n\n{table}")
        typer.echo(f"wrote {out_dir / 'arch.json'} and {out_dir / 'arch.md'}")


def _write(out_dir: Path, stem: str, result: dict[str, Any], table: str) -> None:
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(f"`{result['command']}`\n\n{table}")
    typer.echo(f"wrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.md')}")


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _report(stem: str, out_dir: Path, measure: Any, markdown: Any) -> None:
    """Describe the machine, run ``measure()`` (a dict of figures), print and write its tables."""
    from fer_bench.env import describe, environment

    _setup_logging()
    env = environment()
    result: dict[str, Any] = {"command": shlex.join(["fer-bench", *sys.argv[1:]]), "environment": env, **measure()}
    typer.echo(describe(env))
    table = markdown(result)
    typer.echo(table)
    _write(out_dir, stem, result, table)


@app.command()
def crops(
    models: Annotated[list[str], typer.Option("--model", help="Classifiers to score (repeat); choose on ones that held the split out.")],
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="'val' (the validation faces carved from Training: for choosing) or 'PublicTest' (for reporting).")] = "val",
    limit: Annotated[int, typer.Option(help="Use only the first N faces of the split (0: all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the scenes (sizes, rolls, places, backgrounds).")] = 0,
    grid: Annotated[str, typer.Option(help="'full': every framing compared (for choosing); 'report': the default "
                                           "framing and three alternatives.")] = "full",
    max_angle: Annotated[float, typer.Option(help="Faces are rolled by up to this many degrees either way.")] = 10.0,
    out_dir: OutOpt = Path("bench-results"),
) -> None:
    """Which crop around YuNet's box suits the classifier: FER2013 faces pasted into scenes (48-200 px, rolled
    by up to --max-angle degrees), detected, cropped with each framing and classified, beside the faces as plain crops."""
    from fer_bench.detection import CROP_GRID, REPORT_GRID, crop_study, crops_markdown
    from fer_bench.env import environment
    from fer_runtime import EmotionRecognizer, FaceDetector, FerError
    from fer_train.data import DataError, load_fer2013, make_splits

    _setup_logging()
    if split not in ("val", "PublicTest"):
        _fail(f"--split must be 'val' or 'PublicTest', got {split!r}", 2)
    if grid not in ("full", "report"):
        _fail(f"--grid must be 'full' or 'report', got {grid!r}", 2)
    try:
        splits = make_splits(load_fer2013(data))
        classifiers = {m: EmotionRecognizer(m, precision="named") for m in models}
    except (DataError, FerError) as exc:
        _fail(f"{exc}. {DATA_HINT}" if isinstance(exc, DataError) else str(exc))
    part = splits.val if split == "val" else splits.test
    n = limit or len(part.labels)
    result = {"command": shlex.join(["fer-bench", *sys.argv[1:]]), "environment": environment(), "split": split,
              **crop_study(part.images[:n], part.labels[:n], classifiers, FaceDetector(),
                           CROP_GRID if grid == "full" else REPORT_GRID, seed=seed, max_angle=max_angle,
                           progress=lambda m: typer.echo(m, err=True))}
    table = crops_markdown(result)
    typer.echo(table)
    _write(out_dir, "crops", result, table)


@app.command()
def detect(
    rounds: Annotated[int, typer.Option(help="Timed calls per setting (latency parts).")] = 200,
    models: Annotated[Optional[list[str]], typer.Option("--model", help="Classifiers for the end-to-end latency (repeat).")] = None,
    quick: QuickOpt = False,
    oracle_model: Annotated[Path, typer.Option(help="OpenCV zoo's 640x640 YuNet, for the decoder parity check "
                                                    "(needs OpenCV; skipped with a note when absent).")] = ORACLE_YUNET,
    out_dir: OutOpt = Path("bench-results"),
) -> None:
    """Whole frames: decoder parity with cv2.FaceDetectorYN, YuNet's recall by face width, the eight-face 1280x720 target, the detector's latency at
    320/640/1280 px, and end-to-end latency per thread count and ORT spinning setting."""
    from fer_bench.detection import (
        detect_markdown,
        detector_latency,
        eight_faces,
        per_face_latency,
        recall_by_width,
        settings_latency,
    )
    from fer_runtime import FaceDetector
    from fer_runtime.bundled import model_registry

    rounds = min(rounds, 30) if quick else rounds

    def measure() -> dict[str, Any]:
        result: dict[str, Any] = {}
        try:
            from fer_bench.detection import decoder_parity

            if not oracle_model.is_file():
                raise FileNotFoundError(f"{oracle_model} not found")
            result["parity"] = decoder_parity(oracle_model)
        except (ImportError, FileNotFoundError) as exc:
            result["parity"] = {"skipped": str(exc)}
        _say("recall by face width")
        result["recall"] = recall_by_width(FaceDetector(), [12, 16, 18, 20, 22, 24, 28, 32, 40],
                                           placements=5 if quick else 25, seed=1)
        _say("eight faces in 1280x720")
        result["eight_faces"] = eight_faces(FaceDetector(), layouts=3 if quick else 20)
        _say("detector latency")
        result["detector_latency"] = detector_latency(rounds=max(10, rounds // 2))
        _say("per-face latency of every bundled fp32 and int8 model")
        result["per_face"] = per_face_latency([m for m in model_registry() if not m.endswith("-fp16")], rounds)
        result["settings_latency"] = settings_latency(models or ["vgg-taper-int8", "vgg-deep"], rounds, progress=_say)
        return result

    _report("detect", out_dir, measure, detect_markdown)


@app.command()
def video(
    models: Annotated[Optional[list[str]], typer.Option("--model", help="Classifiers to run (repeat); default: the fast variant and the default model.")] = None,
    seconds: Annotated[float, typer.Option(help="Length of each generated clip, at 30 fps.")] = 10.0,
    long_frames: Annotated[int, typer.Option(help="Frames of the memory run (generated 160x120 frames; 0: skip it).")] = 100_000,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime threads per model (0: the runtime's default).")] = 0,
    quick: QuickOpt = False,
    out_dir: OutOpt = Path("bench-results"),
) -> None:
    """Video end to end on generated clips (640x480 with one face, 1280x720 with four, one leaving and coming back):
    frames/s split by stage (decode, detect, classify, track, write), identity switches, decode speed, and RSS over a long run."""
    from fer_bench.video import video_benchmark, video_markdown

    _report("video", out_dir, lambda: video_benchmark(
        models or ["vgg-taper-int8", "vgg-deep"], seconds=2.0 if quick else seconds,
        long_frames=min(long_frames, 2000) if quick else long_frames, threads=threads or None, progress=_say),
        video_markdown)


@app.command()
def scale(
    images: Annotated[int, typer.Option(help="Generated 640x480 JPEGs with one face.")] = 2000,
    video_frames: Annotated[int, typer.Option(help="Frames of the generated 640x480 clip.")] = 1800,
    range_frames: Annotated[int, typer.Option(help="Frames per video range handed to a worker.")] = 150,
    quick: QuickOpt = False,
    out_dir: OutOpt = Path("bench-results"),
) -> None:
    """fer-batch on a local Ray instance at 1 and 2 workers (and 1 worker x 2 threads) against the single-process
    fer-predict on the same files: images/s, video frames/s, and the Parquet bytes per row."""
    from fer_bench.scale import scale_benchmark, scale_markdown

    _report("scale", out_dir, lambda: scale_benchmark(
        min(images, 40) if quick else images, min(video_frames, 90) if quick else video_frames,
        min(range_frames, 30) if quick else range_frames, progress=_say), scale_markdown)


@app.command()
def portable(
    models: Annotated[Optional[list[str]], typer.Option("--model", help="Classifiers (repeat); default: the fast variant and the default model.")] = None,
    rounds: Annotated[int, typer.Option(help="Interleaved timed rounds per call (batch 256: an eighth as many).")] = 100,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0: one per core).")] = 2,
    quick: QuickOpt = False,
    out_dir: OutOpt = Path("bench-results"),
) -> None:
    """The portable graphs (fer-export --portable) against the NumPy path: predict_proba at batch 1 and 256,
    detect on a 640x480 frame with one face and a 1280x720 frame with eight."""
    from fer_bench.portable import portable_latency, portable_markdown

    _report("portable", out_dir, lambda: portable_latency(models or ["vgg-taper-int8", "vgg-deep"],
                                                          min(rounds, 16) if quick else rounds, threads or None,
                                                          progress=_say), portable_markdown)


@app.command()
def serve(
    requests: Annotated[int, typer.Option(help="Requests per setting and concurrency, over all rounds.")] = 400,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (every setting once per round, in a random order).")] = 10,
    stream_frames: Annotated[int, typer.Option(help="Frames of the generated clip sent over the WebSocket.")] = 300,
    soak_requests: Annotated[int, typer.Option(help="Requests of the memory run (0: skip it).")] = 100_000,
    quick: QuickOpt = False,
    out_dir: OutOpt = Path("bench-results"),
) -> None:
    """fer-serve on 127.0.0.1: requests/s and p50/p99 for a 640x480 JPEG with one face at concurrency 1, 8 and 32
    (with and without micro-batching) against in-process detect; WebSocket frames/s; server RSS over a long run."""
    from fer_bench.serve import serve_benchmark, serve_markdown

    _report("serve", out_dir, lambda: serve_benchmark(
        min(requests, 40) if quick else requests, rounds=min(rounds, 2) if quick else rounds,
        stream_frames=min(stream_frames, 30) if quick else stream_frames,
        soak_requests=min(soak_requests, 200) if quick else soak_requests, progress=_say), serve_markdown)


PEER_HELP = ("The peer's python: a virtual environment with fer, TensorFlow and OpenCV (never a dependency of ours). "
             "Make one: python -m venv peer && peer/bin/pip install fer tensorflow-cpu 'opencv-contrib-python<5'. "
             "fer requires facenet-pytorch (which pulls torch) for its MTCNN mode only; to skip it: peer/bin/pip "
             "install --no-deps fer, then peer/bin/pip install tensorflow-cpu 'opencv-contrib-python<5' requests "
             "pillow setuptools (what 'from fer.fer import FER' imports; it needs pkg_resources).")


PEER_DOC = (
    "fer-edge against the PyPI package fer (25.10.x) on the same FER2013 PublicTest faces and composed frames.\n\n"
    "Measured, at 1 thread and at each package's default threads: per-face latency end to end (ours: predict_proba "
    "on a 48x48 face; fer: detect_emotions given the face's box) and model only (the ONNX Runtime session; the "
    "TFLite interpreter), p50/p90; throughput over all faces (each package's fastest way); accuracy with a 95% "
    "Wilson interval (fer with its default offsets and with offsets (0, 0), the better one quoted); whole 640x480 "
    "frames with 1 and 4 faces at known boxes (time, and faces found at IoU >= 0.5: our YuNet against fer's Haar "
    "cascade); cold start, import time and peak RSS per package.\n\n"
    "How: every package and thread setting in its own worker process (fer under --peer-python, ours under this "
    "python), speaking JSON lines over stdin/stdout, faces and frames passed as .npy files; small timing blocks of "
    "all workers interleaved round by round in a fresh random order, so the machine's drift lands on all of them; "
    "ratios ours / fer are medians of same-round ratios. A worker that dies, stalls past --timeout or answers "
    "garbage ends the run with a one-line error.\n\n"
    "The peer: python -m venv peer && peer/bin/pip install fer tensorflow-cpu 'opencv-contrib-python<5', then "
    "--peer-python peer/bin/python or FER_PEER_PYTHON (see --peer-python for skipping facenet-pytorch and torch).\n\n"
    "Results: peer.json (every figure, per-round medians included), peer.md (one row per measure, with the CPU, "
    "its flags and this command) and peer.png (per-face latency) in --out-dir, by default "
    "benchmarks/results/peer/HOST-TAG/ (the CPU model and its widest int8 extension, e.g. amd-epyc-avx512-vnni).\n\n"
    "fer-bench peer --quick --peer-python peer/bin/python -o /tmp/peer-smoke   # a smoke run in about a minute"
)


@app.command(help=PEER_DOC)
def peer(
    models: Annotated[Optional[list[str]], typer.Option(
        "--model", help="Our model(s) to set against fer (repeat; default vgg-taper-int8), all in the same "
                        "interleaved run.")] = None,
    peer_python: Annotated[Optional[Path], typer.Option(envvar="FER_PEER_PYTHON", help=PEER_HELP)] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds of the per-face latency (one block per "
                                                    "worker each).")] = 40,
    block: Annotated[int, typer.Option(min=1, help="Calls per worker and round (per-face latency).")] = 50,
    faces: Annotated[int, typer.Option(min=0, help="Use only the first N PublicTest faces (0: all 3,589).")] = 0,
    frames: Annotated[int, typer.Option(min=1, help="Composed 640x480 frames of each kind (1 face, 4 faces).")] = 10,
    data: DataOpt = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for any one answer of a worker.")] = 300.0,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny everything (48 faces, 3 rounds of 8 calls, 1 frame of "
                                                        "each kind): a smoke run, not figures.")] = False,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out-dir", "-o", help="Where peer.json, peer.md and peer.png go (default: "
                                "benchmarks/results/peer/HOST-TAG/, e.g. amd-epyc-avx512-vnni).")] = None,
) -> None:
    """fer-bench peer: see PEER_DOC (typer keeps a docstring's line breaks, so the help is written out there)."""
    from fer_bench.peer import (PEER_SCRIPT, PeerError, PeerSettings, check_peer_python, compose_frames,
                                default_out_dir, env_host_tag, markdown, peer_environment, public_test, run_peer,
                                write_outputs)
    from fer_train.data import DataError

    _setup_logging()
    if peer_python is None:
        _fail("no peer python: pass --peer-python or set FER_PEER_PYTHON; make one with: python -m venv peer && "
              "peer/bin/pip install fer tensorflow-cpu 'opencv-contrib-python<5'", 2)
    try:
        check_peer_python(peer_python)
    except PeerError as exc:
        _fail(str(exc), 2)
    settings = PeerSettings(models=tuple(models or ["vgg-taper-int8"]), rounds=rounds, block=block, timeout_s=timeout)
    settings = settings.quick() if quick else settings
    try:
        images, labels = public_test(data or _shared_fer2013(), min(faces or 48, 48) if quick else faces)
    except (DataError, ValueError) as exc:
        _fail(f"{exc}. {DATA_HINT}" if isinstance(exc, DataError) else str(exc))
    scenes = compose_frames(images, 1 if quick else frames, seed=settings.seed)
    env = peer_environment()
    try:
        result = run_peer(images, labels, scenes, [str(peer_python), str(PEER_SCRIPT)], settings, progress=_say)
    except PeerError as exc:
        _fail(str(exc))
    result = {"command": shlex.join(["fer-bench", *sys.argv[1:]]), "environment": env, "host_tag": env_host_tag(env),
              **result}
    table = markdown(result)
    typer.echo(table)
    paths = write_outputs(result, out_dir or default_out_dir(env))
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


def _shared_fer2013() -> Path | None:
    """../shared/data/fer2013 beside the checkout when present (else FER2013's own defaults apply)."""
    path = checkout_path("..", "shared", "data", "fer2013")
    return path if path.exists() else None


def run() -> None:
    # OpenMP workers (PyTorch) sleep when idle instead of spinning, as ONNX Runtime's do in fer-bench:
    # interleaved on few cores, a spinning pool would slow the other contender. Must precede torch's import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    run()
