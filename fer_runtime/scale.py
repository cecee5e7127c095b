"""Labelling archives on Ray Data: images and videos in, one Parquet dataset of rows out.

``pip install 'fer-edge[scale]'``. The work runs in Ray Data's actor pool with
:class:`~fer_runtime.batch.BatchPredictor` as the per-actor model (loaded once per actor); Ray
restarts an actor that dies and retries its batch, and a batch's rows are only kept once it has
finished, so a lost worker loses and doubles nothing. Long videos are split into frame ranges
that spread over the workers; track ids restart in each range (see
:data:`~fer_runtime.batch.TRACKS_PER_RANGE`). Output order: the images in input order, then the
video ranges in input order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_runtime.app import find_inputs, is_uri, wanted
from fer_runtime.batch import BatchPredictor, split_video
from fer_runtime.errors import InputError, MissingExtraError
from fer_runtime.rows import to_arrow
from fer_runtime.video import is_video_path


class RayPredictor(BatchPredictor):
    """:class:`BatchPredictor` whose batches come out as Arrow tables of one fixed schema."""

    def __call__(self, batch: dict[str, Any]) -> Any:  # type: ignore[override]
        return to_arrow(self.rows(batch), self.columns)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("running on Ray needs Ray Data: pip install 'fer-edge[scale]'") from exc
    return ray


@dataclass
class Plan:
    """What to label: image rows (id, path) and video frame ranges (id, path, start, stop)."""

    images: list[dict[str, Any]] = field(default_factory=list)
    ranges: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # videos whose frame count cannot be read


def _list_uri(uri: str) -> list[str]:
    """The image and video files under a URI prefix (pyarrow's file systems: s3://, gs://, file://...)."""
    from pyarrow import fs

    try:
        filesystem, inner = fs.FileSystem.from_uri(uri)
        infos = filesystem.get_file_info(fs.FileSelector(inner.rstrip("/"), recursive=True))
    except (OSError, ValueError) as exc:
        raise InputError(f"{uri}: cannot list ({exc})") from exc
    scheme = uri.split("://", 1)[0]
    return sorted(f"{scheme}://{i.path}" for i in infos if i.type == fs.FileType.File and wanted(i.path))


def expand(inputs: Iterable[str]) -> list[tuple[str, str | None]]:
    """Inputs by :func:`fer_runtime.app.find_inputs`' rules -> (path, known error) pairs; a URI
    prefix is listed (a URI with an image or video suffix is taken as one file)."""
    out: list[tuple[str, str | None]] = []
    for item in find_inputs(inputs):
        if is_uri(item.path) and not wanted(item.path):
            out += [(uri, None) for uri in _list_uri(item.path)]
        else:
            out.append((item.path, item.error))
    return out


def read_manifest(path: str) -> list[str]:
    """The ``path`` column of a CSV or Parquet manifest."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path) if path.lower().endswith(".parquet") else pacsv.read_csv(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a readable manifest ({exc})") from exc
    if "path" not in table.column_names:
        raise InputError(f"{path}: a manifest needs a 'path' column, got {table.column_names}")
    return [str(p) for p in table.column("path").to_pylist() if p is not None]


def plan(paths: list[tuple[str, str | None]], range_frames: int = 900) -> Plan:
    """Images as they are (an input with a known error becomes an error row); each local video split
    into ranges of ``range_frames`` frames."""
    from fer_runtime.video import VideoError, frame_count

    out = Plan()
    for p, error in paths:
        if error is not None or not is_video_path(p):
            out.images.append({"id": p, "path": p, "error": error or ""})
            continue
        try:
            n = frame_count(p)
        except VideoError as exc:
            out.unreadable.append(str(exc))
            n = None
        out.ranges += split_video(p, n, range_frames)  # no declared count: one range, to the end
    return out


def dataset(work: Plan, predictor: BatchPredictor, *, workers: int, threads_per_worker: int,
            batch_size: int = 16) -> Any:
    """The Ray Data pipeline (lazy): both kinds of input through the actor pool, in input order."""
    ray = _ray()
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    # A fixed pool per kind of input (a pool that grows from one actor was slower here: experiments/LOG.md);
    # the video pool's actors start as the image pool's finish and free their CPUs.
    options = {"compute": ray.data.ActorPoolStrategy(size=workers), "num_cpus": threads_per_worker,
               "batch_format": "numpy"}
    parts = []
    if work.images:
        parts.append(ray.data.from_items(work.images).map_batches(
            RayPredictor, fn_constructor_kwargs=_kwargs(predictor), batch_size=batch_size, **options))
    if work.ranges:  # one range a batch: ranges are already a worker's share
        parts.append(ray.data.from_items(work.ranges, override_num_blocks=len(work.ranges)).map_batches(
            RayPredictor, fn_constructor_kwargs=_kwargs(predictor), batch_size=1, **options))
    if not parts:
        raise InputError("nothing to label: no image or video files")
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _kwargs(p: BatchPredictor) -> dict[str, Any]:
    return {"model": p.model, "crops": p.crops, "threads": p.threads, "detector": p.detector_options,
            "video": p.video_options, "max_pixels": p.max_pixels, "models_dir": p.models_dir}


def run(inputs: list[str], out_dir: str, *, address: str | None = None, workers: int | None = None,
        threads_per_worker: int = 1, batch_size: int = 16, range_frames: int = 900,
        predictor: BatchPredictor | None = None) -> dict[str, Any]:
    """Label ``inputs`` (paths, folders, globs, URIs) into a Parquet dataset in ``out_dir``.

    ``address``: an existing cluster ("auto", "ray://host:10001"...); ``None`` starts a local Ray
    instance on this machine's CPUs. ``workers``: actors (default: as many as the cluster's CPUs
    allow at ``threads_per_worker`` each). Returns counts of what was planned and written.
    """
    ray = _ray()
    if "://" not in out_dir and Path(out_dir).is_dir() and any(Path(out_dir).iterdir()):
        raise InputError(f"{out_dir} already holds files: choose a new output folder (nothing is overwritten)")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if threads_per_worker > cpus:
            raise InputError(f"threads_per_worker={threads_per_worker} is more than the cluster's {cpus} CPUs: "
                             "no actor could be placed")
        n = workers or max(1, cpus // threads_per_worker)
        predictor = predictor or BatchPredictor(threads=threads_per_worker)
        predictor.recognizer  # noqa: B018  (a wrong model or provider stops here, before any work)
        work = plan(expand(inputs), range_frames)
        ds = dataset(work, predictor, workers=n, threads_per_worker=threads_per_worker, batch_size=batch_size)
        ds.write_parquet(out_dir)
    finally:
        if started:
            ray.shutdown()
    return {"images": len(work.images), "video_ranges": len(work.ranges), "workers": n,
            "threads_per_worker": threads_per_worker, "unreadable_videos": work.unreadable}
