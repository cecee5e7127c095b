"""``fer-predict``: classify the faces in image files or folders (``pip install 'fer-edge[cli]'``)."""

# No "from __future__ import annotations": typer reads the annotations of the command defined
# inside _build_app, where typer is imported lazily, so they must be evaluated there.
import csv
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fer_runtime.errors import FerError, MissingExtraError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def iter_images(paths: list[Path]) -> Iterator[Path]:
    """Files as given; folders walked recursively for image files, in sorted order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def read_image(path: Path) -> Any:
    """An image file -> uint8 array, gray (H, W) or RGB (H, W, 3)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise OSError(f"not a readable image ({exc})") from exc


def _rows(recognizer: Any, files: list[Path], detect: bool, errors: list[str]) -> list[dict[str, Any]]:
    rows = []
    for path in files:
        try:
            image = read_image(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            continue
        try:
            if detect:
                faces = recognizer.detect(image)
                results = [(face.box, face.prediction) for face in faces]
                if not faces:
                    rows.append({"file": str(path), "face": None, "box": None, "label": None, "score": None, "probabilities": None})
            else:
                results = [(None, recognizer.predict_one(image))]
        except FerError as exc:
            if isinstance(exc, MissingExtraError):
                raise
            errors.append(f"{path}: {exc}")
            continue
        for i, (box, pred) in enumerate(results):
            rows.append({"file": str(path), "face": i if detect else None, "box": list(box) if box else None,
                         "label": pred.label, "score": round(pred.score, 4),
                         "probabilities": {k: round(v, 4) for k, v in pred.probabilities.items()}})
    return rows


def _table(rows: list[dict[str, Any]], labels: tuple[str, ...]) -> str:
    header = f"{'file':40s} {'face box':>20s} {'label':9s} {'score':>6s}  " + " ".join(f"{lab[:7]:>7s}" for lab in labels)
    lines = [header]
    for r in rows:
        box = "no face" if r["face"] is None and r["box"] is None and r["label"] is None else (
            "" if r["box"] is None else "x{} y{} {}x{}".format(*r["box"]))
        if r["label"] is None:
            lines.append(f"{r['file'][-40:]:40s} {box:>20s}")
            continue
        probs = " ".join(f"{r['probabilities'][lab]:7.3f}" for lab in labels)
        lines.append(f"{r['file'][-40:]:40s} {box:>20s} {r['label']:9s} {r['score']:6.3f}  {probs}")
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]], labels: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "face", "x", "y", "w", "h", "label", "score", *labels])
    for r in rows:
        box = r["box"] or [None] * 4
        probs = [r["probabilities"][lab] for lab in labels] if r["probabilities"] else [None] * len(labels)
        writer.writerow([r["file"], r["face"], *box, r["label"], r["score"], *probs])
    return out.getvalue()


def _build_app() -> Any:
    try:
        import PIL  # noqa: F401 - read_image needs it
        import typer
    except ImportError as exc:
        raise MissingExtraError("fer-predict needs typer and pillow: pip install 'fer-edge[cli]'") from exc

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def fer_predict(
        paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
        model: Annotated[str, typer.Option(help="Bundled model name or path to an .onnx file. Default: the bundled default.")] = "",
        providers: Annotated[str, typer.Option(help="'auto', or a comma-separated list such as 'cuda,cpu'.")] = "auto",
        threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime threads (0: its default).")] = 0,
        detect: Annotated[bool, typer.Option("--detect", help="Find faces in whole frames first (needs the detect extra).")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
        csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    ) -> None:
        """Classify the facial expression in each image (a face crop), or in each face found with --detect.

        Unreadable files are reported on stderr and skipped; the exit code is 1 if any failed.
        """
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        if json_out and csv_out:
            raise typer.BadParameter("choose one of --json and --csv")
        from fer_runtime.recognizer import EmotionRecognizer

        files = list(iter_images(paths))
        if not files:
            typer.secho("error: no image files found", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        errors: list[str] = []
        try:
            recognizer = EmotionRecognizer(model or None, providers=providers, threads=threads or None)
            rows = _rows(recognizer, files, detect, errors)
        except FerError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        if json_out:
            typer.echo(json.dumps(rows, indent=1))
        elif csv_out:
            typer.echo(_csv(rows, recognizer.labels), nl=False)
        else:
            typer.echo(_table(rows, recognizer.labels))
        for line in errors:
            typer.secho(f"skipped {line}", fg=typer.colors.YELLOW, err=True)
        if errors:
            raise typer.Exit(1)

    return app


def main() -> None:
    try:
        app = _build_app()
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    app()
