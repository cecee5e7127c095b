"""Build the web app's generated files (npm run build): the portable models and onnxruntime-web's files.

- models/NAME.frame.onnx (and .crop.onnx), written and checked by ``fer-export --portable NAME``
  (no torch: the fer-edge base install plus onnx, ``pip install 'fer-edge[portable]'``);
- models/models.json: the model's labels, settings and source, read from its ``fer_edge_portable``
  metadata (onnxruntime-web has no call for custom metadata);
- vendor/ort/: onnxruntime-web's WASM build, copied from node_modules (``npm ci`` first), so the app
  loads it from its own origin and never from a CDN.

Usage: python3 build.py [--model NAME] (the fast variant, vgg-taper-int8, by default).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
DEFAULT_MODEL = "vgg-taper-int8"
# onnxruntime-web's WASM-only ES module and the threaded SIMD runtime it loads (a worker script and the binary)
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def copy_ort(web: Path = WEB) -> list[Path]:
    dist = web / "node_modules" / "onnxruntime-web" / "dist"
    if not dist.is_dir():
        raise SystemExit(f"error: {dist} is missing: run `npm ci` in {web} first")
    out = web / "vendor" / "ort"
    out.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(dist / name, out / name)) for name in ORT_FILES]


def export_models(name: str = DEFAULT_MODEL, web: Path = WEB) -> Path:
    out = web / "models"
    # fer-export's own entry point (fer_runtime.extras), which needs no typer or torch for --portable
    command = "from fer_runtime.extras import fer_export; fer_export()"
    done = subprocess.run([sys.executable, "-c", command, "--portable", name, "-o", str(out), "--no-ort"], check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: fer-export --portable {name} failed (exit code {done.returncode})")
    return write_manifest(name, out)


def write_manifest(name: str, out: Path) -> Path:
    import onnx

    from fer_runtime.portable import PORTABLE_KEY

    frame = out / f"{name}.frame.onnx"
    meta = json.loads({p.key: p.value for p in onnx.load(str(frame), load_external_data=False).metadata_props}[PORTABLE_KEY])
    manifest = {"model": name, "frame": frame.name, "labels": meta["labels"], "settings": meta["settings"],
                "source": meta["source"], "package_version": meta["package_version"]}
    path = out / "models.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"a shipped model's name (default {DEFAULT_MODEL})")
    args = parser.parse_args()
    copy_ort()
    print(f"wrote {export_models(args.model)} and vendor/ort/")


if __name__ == "__main__":
    main()
