"""``fer-batch``: label a folder, a glob or a manifest of images and videos on Ray Data, into Parquet.

``pip install 'fer-edge[scale]'``. Local by default (a Ray instance on this machine's CPUs);
``--address`` joins an existing cluster. See docs/SCALE.md for clusters.
"""

# No "from __future__ import annotations": typer reads the command's annotations at runtime.
import logging
import time
from typing import Annotated, Any, Optional

from fer_runtime.cli import run_app
from fer_runtime.errors import FerError
from fer_runtime.extras import require


def _summary(out_dir: str, seconds: float, info: dict[str, Any]) -> str:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(out_dir, columns=["source", "frame", "status"])
    counts = {str(k["values"]): int(k["counts"]) for k in pc.value_counts(table.column("status")).to_pylist()}
    is_image = pc.is_null(table.column("frame"))
    images = len(pc.unique(table.filter(is_image).column("source")))
    video = table.filter(pc.invert(is_image))
    frames = len(pc.unique(pc.binary_join_element_wise(video.column("source"), pc.cast(video.column("frame"), "string"),
                                                       "#")))
    return (f"{images:,} images and {frames:,} video frames in {seconds:.1f} s (Ray's start-up included; "
            f"{info['workers']} workers x {info['threads_per_worker']} threads): {table.num_rows:,} rows in {out_dir}, "
            + ", ".join(f"{v:,} {k}" for k, v in sorted(counts.items())))


def _build_app() -> Any:
    require("fer-batch", ("typer", "ray", "pyarrow"), "scale")
    import typer

    from fer_runtime.app import detector_defaults

    det = detector_defaults()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def fer_batch(
        inputs: Annotated[Optional[list[str]], typer.Argument(
            help="Image and video files, folders (searched recursively), glob patterns (quoted) or URIs (s3://...).",
            show_default=False)] = None,
        out: Annotated[str, typer.Option(
            "--out", "-o", help="Output folder or URI (s3://...) for the Parquet files (one row per face); new or empty.",
        )] = "fer-rows",
        manifest: Annotated[Optional[str], typer.Option(
            help="A CSV or Parquet file whose 'path' column lists the inputs (added to INPUTS).")] = None,
        address: Annotated[Optional[str], typer.Option(
            help="An existing Ray cluster ('auto', 'ray://head:10001'); default: a local instance.")] = None,
        workers: Annotated[int, typer.Option(min=0, help="Model actors (0: as many as the CPUs allow).")] = 0,
        threads_per_worker: Annotated[int, typer.Option(min=1, help="CPUs (and ONNX Runtime threads) per actor.")] = 1,
        batch_size: Annotated[int, typer.Option(min=1, help="Images per batch handed to an actor.")] = 16,
        range_frames: Annotated[int, typer.Option(
            min=1, help="Videos are split into ranges of this many frames, spread over the actors "
                        "(track ids restart in each range).")] = 900,
        crops: Annotated[bool, typer.Option("--crops", help="Each image is already a face crop (no detection).")] = False,
        model: Annotated[str, typer.Option(
            help="Model name (see fer-predict --list-models) or a path every worker can read.")] = "",
        models_dir: Annotated[Optional[str], typer.Option(
            envvar="FER_MODELS_DIR", metavar="DIR",
            help="A source checkout's models/ folder (readable by every worker), for models not in the wheel.")] = None,
        min_face: Annotated[int, typer.Option(min=1, help="Smallest face to find, in pixels.")] = det["min_face"],
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's own logs.")] = False,
    ) -> None:
        """Label images and videos on Ray Data: one Parquet row per face (or no_face / error row per input).

        Unreadable inputs become rows with status "error", never a failed job; an actor that dies is
        restarted by Ray and its batch retried, so no row is lost or doubled.
        """
        from fer_runtime.batch import BatchPredictor
        from fer_runtime.scale import read_manifest, run

        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
        if not verbose:  # after Ray Data's import, which sets up its own loggers
            import ray.data

            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(logging.WARNING)
            ray.data.DataContext.get_current().enable_progress_bars = True
        paths = list(inputs or [])
        try:
            if manifest is not None:
                paths += read_manifest(manifest)
            if not paths:
                raise typer.BadParameter("give INPUTS or --manifest")
            predictor = BatchPredictor(model or None, crops=crops, threads=threads_per_worker,
                                       detector={"min_face": min_face}, models_dir=models_dir)
            start = time.perf_counter()
            info = run(paths, str(out), address=address, workers=workers or None,
                       threads_per_worker=threads_per_worker, batch_size=batch_size, range_frames=range_frames,
                       predictor=predictor)
        except (FerError, OSError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        for problem in info["unreadable_videos"]:
            typer.secho(f"warning: {problem} (its error row is in the output)", fg=typer.colors.YELLOW, err=True)
        typer.echo(_summary(out, time.perf_counter() - start, info), err=True)

    return app


def main() -> None:
    run_app(_build_app)
