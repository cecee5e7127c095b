"""``fer-export``: a fer-train checkpoint -> a validated ONNX model (+ int8 / fp16 variants)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def fer_export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by fer-train (e.g. runs/seed50/best.pt).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the fp32 ONNX model goes.")] = Path("model.onnx"),
    data: Annotated[Optional[Path], typer.Option(envvar="FER2013_PATH", help="FER2013 source for the parity checks (PublicTest) and int8 calibration (Training).")] = None,
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset (17 or newer).")] = 18,
    parity_faces: Annotated[int, typer.Option(min=1000, help="PublicTest faces for the PyTorch vs ONNX Runtime parity check.")] = 1000,
    int8: Annotated[bool, typer.Option("--int8", help="Also write <stem>.int8.onnx: static QDQ quantization, per-channel weights, calibrated on Training faces.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write <stem>.fp16.onnx for GPUs (float32 inputs and outputs kept).")] = False,
    calibration_faces: Annotated[int, typer.Option(min=500, help="Training faces used to calibrate int8.")] = 1000,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the validation report as JSON.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Export CHECKPOINT to ONNX and validate it: onnx.checker, an ONNX Runtime session, and parity with
    PyTorch on real PublicTest faces (max |logit diff| <= 1e-4, identical argmax, batch 1 and 64).

    Any failure is a one-line error and exit code 1; nothing is left at the output paths then.

    `fer-export --portable NAME -o DIR`: a shipped model's portable crop and frame models instead (no torch).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")
    from fer_export.onnx_export import ExportError, export_onnx

    try:
        report = export_onnx(checkpoint, output, data=data, opset=opset, parity_faces=parity_faces,
                             int8=int8, fp16=fp16, calibration_faces=calibration_faces)
    except ExportError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if verbose:
            raise
        typer.secho(f"error: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(report.summary())
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=1))


def main() -> None:
    from fer_runtime.extras import wants_portable

    if wants_portable(sys.argv[1:]):  # the portable models have their own, torch-free command line
        from fer_export.portable_cli import main as portable_main

        portable_main()
        return
    app()
