"""One column spec for every output, and the sinks that write it.

A row is one face (or one ``no_face`` / ``error`` row for an input without faces or one that
failed), with the same column names and meanings whether it comes from a photo, a video frame,
``fer-batch`` or :func:`to_dataframe`:

=================  ============================================================================
``source``         the file, URL, camera or id the face came from
``frame``          the frame's index in a video (empty for photos)
``time_s``         the frame's time in seconds (empty for photos)
``track``          the face's track id in a video, the same while it stays in view (empty for photos)
``face``           the face's rank in its image or frame, 0 being the best detector score
``x y w h``        its box in whole pixels of the image (a face crop: the whole image)
``detector_score`` the face detector's confidence (empty for crops)
``label``          the most probable expression (smoothed over time in videos)
``confidence``     that label's probability
``p_<label>``      each label's probability, in the model's label order (smoothed in videos)
``raw_p_<label>``  each label's probability in this frame alone (only in outputs that hold video;
                   equal to ``p_<label>`` for photos and when smoothing is off)
``status``         ``ok``, ``no_face`` or ``error``
``error``          why an input failed (or why its annotated copy was not written)
=================  ============================================================================

Sinks write rows as they come, flushed after each :meth:`RowSink.write`: CSV and JSON Lines
(:class:`CsvSink`, :class:`JsonLinesSink`), an aligned table for terminals (:class:`TableSink`);
``fer-batch`` writes the same columns to Parquet (:func:`to_arrow`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from fer_runtime.errors import MissingExtraError

if TYPE_CHECKING:
    from fer_runtime.results import Face

INT_COLUMNS = ("frame", "track", "face", "x", "y", "w", "h")
TEXT_COLUMNS = ("source", "label", "status", "error")
STATUSES = ("ok", "no_face", "error")


def columns(labels: Sequence[str], raw: bool = False) -> list[str]:
    """The column names, in order, for a model with ``labels``; ``raw``: with ``raw_p_<label>``
    (outputs that hold video)."""
    return ["source", "frame", "time_s", "track", "face", "x", "y", "w", "h", "detector_score", "label",
            "confidence", *(f"p_{lab}" for lab in labels), *((f"raw_p_{lab}" for lab in labels) if raw else ()),
            "status", "error"]


def status_row(source: str, status: str, *, frame: int | None = None, time_s: float | None = None,
               error: str | None = None) -> dict[str, Any]:
    """A ``no_face`` or ``error`` row (columns not given are empty)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return {"source": source, "frame": frame, "time_s": None if time_s is None else round(float(time_s), 6),
            "status": status, "error": error}


def face_rows(source: str, faces: Iterable[Face], *, frame: int | None = None,
              time_s: float | None = None) -> list[dict[str, Any]]:
    """One row per face of an image or frame, or one ``no_face`` row when there are none."""
    where = status_row(source, "ok", frame=frame, time_s=time_s)
    rows = [{**where, **face.to_row()} for face in faces]
    return rows or [status_row(source, "no_face", frame=frame, time_s=time_s)]


def complete(row: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``row`` with exactly the columns ``names``, in order; a missing ``raw_p_<label>`` takes the
    value of ``p_<label>`` (an unsmoothed face's own prediction), any other missing column is empty."""
    out = {}
    for name in names:
        if name in row:
            out[name] = row[name]
        elif name.startswith("raw_p_"):
            out[name] = row.get(name.removeprefix("raw_"))
        else:
            out[name] = None
    return out


class RowSink:
    """Writes rows of :func:`columns` to a text stream: :meth:`write` takes one input's (or frame's)
    rows, written in one piece and flushed, so a process killed mid-run leaves whole lines."""

    def __init__(self, stream: TextIO, labels: Sequence[str], raw: bool = False) -> None:
        self.stream, self.labels, self.columns = stream, tuple(labels), columns(labels, raw)
        self._started = False

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        buf = io.StringIO()
        if not self._started:
            self._started = True
            self.header(buf)
        for row in rows:
            self.line(buf, complete(row, self.columns))
        self.stream.write(buf.getvalue())
        self.stream.flush()

    def header(self, buf: io.StringIO) -> None:
        """What comes before the first row (nothing by default)."""

    def line(self, buf: io.StringIO, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Write the header if no row came, and flush."""
        if not self._started:
            self.write([])
        self.stream.flush()


class JsonLinesSink(RowSink):
    """One JSON object per row and line; empty columns are ``null``."""

    def line(self, buf: io.StringIO, row: dict[str, Any]) -> None:
        buf.write(json.dumps(row) + "\n")


class CsvSink(RowSink):
    """A header, then one line per row; empty columns are empty fields."""

    def header(self, buf: io.StringIO) -> None:
        csv.writer(buf, lineterminator="\n").writerow(self.columns)

    def line(self, buf: io.StringIO, row: dict[str, Any]) -> None:
        csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in row.values()])


class TableSink(RowSink):
    """Aligned columns for a terminal: where the face is, its label and probabilities, the source last."""

    def header(self, buf: io.StringIO) -> None:
        probs = " ".join(f"{lab[:7]:>7s}" for lab in self.labels)
        buf.write(f"{'frame':>6s} {'track':>5s} {'face':>4s} {'box x,y,w,h':>19s} {'det':>5s}  "
                  f"{'label':9s} {'conf':>5s}  {probs}  source\n")

    def line(self, buf: io.StringIO, row: dict[str, Any]) -> None:
        def text(key: str, fmt: str = "") -> str:
            return "-" if row[key] is None else format(row[key], fmt)

        where = f"{text('frame'):>6s} {text('track'):>5s} {text('face'):>4s}"
        if row["status"] != "ok":
            what = "no face" if row["status"] == "no_face" else "error"
            note = f": {row['error']}" if row["error"] else ""
            buf.write(f"{where} {'':>19s} {'':>5s}  {what:9s} {'':>5s}  {' ' * (8 * len(self.labels) - 1)}  "
                      f"{row['source']}{note}\n")
            return
        box = ",".join(str(row[k]) for k in "xywh")
        probs = " ".join(f"{row[f'p_{lab}']:7.3f}" for lab in self.labels)
        note = f"  ({row['error']})" if row["error"] else ""
        buf.write(f"{where} {box:>19s} {text('detector_score', '5.3f'):>5s}  {row['label']:9s} "
                  f"{row['confidence']:5.3f}  {probs}  {row['source']}{note}\n")


SINKS: dict[str, type[RowSink]] = {"table": TableSink, "json": JsonLinesSink, "csv": CsvSink}


def _kind(name: str) -> str:
    return "int" if name in INT_COLUMNS else "text" if name in TEXT_COLUMNS else "float"


def to_arrow(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> Any:
    """Rows as a ``pyarrow.Table`` of the columns ``names`` with a fixed schema (int64, float64,
    string; empty values as nulls), so that batches concatenate whatever their values."""
    import pyarrow as pa

    kinds = {"int": pa.int64(), "float": pa.float64(), "text": pa.string()}
    filled = [complete(r, names) for r in rows]
    return pa.table({n: pa.array([r[n] for r in filled], type=kinds[_kind(n)]) for n in names})


def ddl_schema(names: Sequence[str]) -> str:
    """The columns as a Spark DDL schema string, for ``mapInPandas`` (docs/SCALE.md)."""
    kinds = {"int": "bigint", "float": "double", "text": "string"}
    return ", ".join(f"{n} {kinds[_kind(n)]}" for n in names)


def to_dataframe(results: Any, source: str = "") -> Any:
    """A ``pandas.DataFrame`` of rows (needs pandas: ``pip install 'fer-edge[pandas]'``).

    ``results``: rows (dicts of :func:`columns`), :class:`~fer_runtime.results.Face` objects (one
    image's, as ``detect`` returns them), :class:`~fer_runtime.results.FrameResult` objects (a
    video's, as ``VideoAnalyzer.run`` yields them) or a list mixing them; ``source`` names where
    faces and frames came from. Integer columns are pandas' nullable ``Int64``."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingExtraError("to_dataframe needs pandas: pip install 'fer-edge[pandas]'") from exc
    rows = list(_rows(results, source))
    labels = _labels(rows)
    raw = any(k.startswith("raw_p_") and row.get("track") is not None for row in rows for k in row)
    names = columns(labels, raw)
    cells = [{k: None if v == "" else v for k, v in complete(r, names).items()} for r in rows]  # CSV's empty cells
    frame = pd.DataFrame(cells, columns=names, dtype=object)
    for name in names:
        kind = _kind(name)
        if kind != "text":
            frame[name] = pd.to_numeric(frame[name]).astype("Int64" if kind == "int" else "float64")
    return frame


def _rows(results: Any, source: str) -> Iterable[dict[str, Any]]:
    from fer_runtime.results import Face, FrameResult

    items = [results] if isinstance(results, (dict, Face, FrameResult)) else list(results)
    faces = [f for f in items if isinstance(f, Face)]
    if faces:
        yield from face_rows(source, faces)
    for item in items:
        if isinstance(item, FrameResult):
            yield from item.to_rows(source)
        elif isinstance(item, dict):
            yield item
        elif not isinstance(item, Face):
            raise TypeError(f"to_dataframe takes rows, Faces or FrameResults, got a {type(item).__name__}")


def _labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    for row in rows:
        labels = [k.removeprefix("p_") for k in row if k.startswith("p_")]
        if labels:
            return labels
    from fer_runtime.labels import LABELS

    return list(LABELS)

