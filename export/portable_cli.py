"""``fer-export --portable NAME -o DIR``: the portable crop and frame models of a shipped classifier.

Needs only the runtime and ``onnx`` (``pip install 'fer-edge[portable]'``): no torch, no typer, so it
parses its few options with argparse. ``fer-export`` hands any command line holding ``--portable`` here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fer_runtime.extras import require

EPILOG = ("Writes DIR/NAME.crop.onnx (uint8 RGB face crops -> probabilities) and DIR/NAME.frame.onnx (one uint8 RGB "
          "frame -> faces and their expressions), their ONNX Runtime Mobile twins (.ort) and "
          "required_operators.config, after checking them against the Python runtime (docs/PORTABLE.md).")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-export --portable", epilog=EPILOG,
                                description="The portable crop and frame models of a shipped classifier (no torch needed).")
    p.add_argument("--portable", metavar="NAME", required=True,
                   help="a model name (the wheel's, or models/registry.json's in a checkout) or an .onnx path")
    p.add_argument("-o", "--output", metavar="DIR", type=Path, default=Path("portable"), help="output folder")
    p.add_argument("--no-ort", action="store_true", help="skip the .ort twins and required_operators.config")
    p.add_argument("--crops", type=int, default=64, help="synthetic crops in the parity check (default 64)")
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    require("fer-export --portable", ("onnx",), "portable")
    from fer_export.onnx_export import ExportError
    from fer_export.portable import export_portable

    try:
        report = export_portable(args.portable, args.output, ort_format=not args.no_ort, crops=args.crops)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=1))
