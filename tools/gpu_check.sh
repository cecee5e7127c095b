#!/usr/bin/env bash
# gpu_check.sh: does fer-train's CUDA path work, and how fast is it? One run, at most about 8 minutes.
#
#   tools/gpu_check.sh --data fer2013.csv.gz [--device cuda] [--out gpu-check] [--epochs 3] [--limit 20000]
#   tools/gpu_check.sh --subset 12000 --data fer2013.csv.gz --out subset.csv.gz   # a smaller data file to carry
#
# Needs Python with PyTorch (the machine's own build, CUDA or not) and FER2013 (Kaggle's CSV, or a subset written
# by --subset). The repository need not be installed: its source folders go first on PYTHONPATH under their import
# names, and with --wheels DIR the other Python packages it needs (numpy, onnx, onnxscript, onnxruntime, typer,
# tqdm, matplotlib) are installed from DIR without a network into the result folder.
#
# Steps, each logged in OUT/steps.log, results in OUT/summary.json:
#   1. the environment (torch, CUDA device, driver);
#   2. the first steps on the CPU and on DEVICE, same seed, fp32, no augmentation, 512 faces (4 steps of 128):
#      the mean training loss of that epoch on each, and their difference;
#   3. EPOCHS epochs on DEVICE with its default precision (AMP on CUDA) on LIMIT faces: images/s per epoch;
#   4. fer-export of that checkpoint: onnx.checker and ONNX Runtime vs PyTorch parity on PublicTest faces.
# Exit code 0 when every step ran and the checks passed, 1 otherwise (summary.json says which).
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
device=cuda out=gpu-check epochs=3 limit=20000 data="${FER2013_PATH:-}" wheels="" subset=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --out|-o) out="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --subset) subset="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$data" ] && [ -f "$data" ] || { echo "gpu_check.sh: --data FER2013 file needed (or FER2013_PATH)" >&2; exit 2; }
py="${PYTHON:-python3}"

# This checkout's source folders under their import names (pyproject's package-dir), first on the path.
shim="$(mktemp -d)"; trap 'rm -rf "$shim"' EXIT
ln -s "$repo/fer_runtime" "$shim/fer_runtime"; ln -s "$repo/train" "$shim/fer_train"
ln -s "$repo/export" "$shim/fer_export"; ln -s "$repo/benchmarks" "$shim/fer_bench"
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "$subset" ]; then  # write a stratified subset of Training (and all of PublicTest) as a Kaggle CSV
  exec "$py" - "$data" "$subset" "$out" <<'EOF'
import gzip, sys
import numpy as np
from fer_train.data import load_fer2013, stratified_split
data, n, out = load_fer2013(sys.argv[1], cache=False), int(sys.argv[2]), sys.argv[3]
train = data.split("Training")
keep, _ = stratified_split(train.labels, 1 - n / len(train), 0)
rows = [(train.subset(keep), "Training"), (data.split("PublicTest"), "PublicTest")]
with gzip.open(out, "wt") as f:
    f.write("emotion,pixels,Usage\n")
    for part, usage in rows:
        for label, img in zip(part.labels, part.images):
            f.write(f"{label},{' '.join(map(str, img.ravel()))},{usage}\n")
print(f"{out}: {len(keep)} Training and {len(rows[1][0])} PublicTest faces")
EOF
fi

mkdir -p "$out"
log="$out/steps.log"
: > "$log"
step() { echo "== $*" | tee -a "$log"; }

if [ -n "$wheels" ]; then
  step "installing the missing packages from $wheels into $out/site"
  "$py" -m pip install -q --no-index --find-links "$wheels" --target "$out/site" \
    numpy onnx onnxscript onnxruntime typer tqdm matplotlib >> "$log" 2>&1
  export PYTHONPATH="$PYTHONPATH:$out/site"
fi
missing="$("$py" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "numpy", "onnx", "onnxscript", "onnxruntime", "typer", "tqdm", "matplotlib")
               if importlib.util.find_spec(m) is None))
EOF
)"
if [ -n "$missing" ]; then
  echo "gpu_check.sh: missing Python packages: $missing (pass --wheels DIR holding their wheels)" | tee -a "$log" >&2
  exit 1
fi

step "environment"
"$py" - "$out/environment.json" <<'EOF' 2>&1 | tee -a "$log"
import json, platform, subprocess, sys
import torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "cuda_available": torch.cuda.is_available(), "cpu": platform.processor() or platform.machine()}
if torch.cuda.is_available():
    env["gpu"] = torch.cuda.get_device_name(0)
    env["bf16"] = torch.cuda.is_bf16_supported()
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                        "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env))
EOF

train() {  # train NAME DEVICE EXTRA...: a fer-train run into $out/NAME, its log appended
  local name="$1" dev="$2"; shift 2
  "$py" -m fer_train --data "$data" --out-dir "$out/$name" --device "$dev" --seed 0 "$@" >> "$log" 2>&1
}

step "first steps: cpu and $device, fp32, no augmentation, 512 faces"
first=(--arch seed --epochs 1 --limit 512 --batch-size 128 --no-augment --precision fp32)
train first-reference-cpu cpu "${first[@]}"; cpu_rc=$?
train first-device "$device" "${first[@]}"; dev_rc=$?

step "$epochs epochs on $device, default precision, $limit faces"
start=$(date +%s)
warmup=$(( epochs > 1 ? 1 : 0 ))
train speed "$device" --arch vgg-deep --epochs "$epochs" --limit "$limit" --batch-size 256 --lr 0.05 \
  --optimizer sgd --warmup-epochs "$warmup"; speed_rc=$?
speed_s=$(( $(date +%s) - start ))

step "fer-export with parity"
"$py" -m fer_export "$out/speed/best.pt" -o "$out/speed/model.onnx" --data "$data" --json "$out/export.json" \
  >> "$log" 2>&1; export_rc=$?

"$py" - "$out" "$device" "$cpu_rc" "$dev_rc" "$speed_rc" "$export_rc" "$speed_s" <<'EOF' | tee -a "$log"
import json, sys
from pathlib import Path
out, device = Path(sys.argv[1]), sys.argv[2]
cpu_rc, dev_rc, speed_rc, export_rc, seconds = map(int, sys.argv[3:])
def epochs(name):
    path = out / name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else []
cpu, dev, speed = epochs("first-reference-cpu"), epochs("first-device"), epochs("speed")
summary = {"device": device, "steps": {"first_steps_cpu": cpu_rc == 0, "first_steps_device": dev_rc == 0,
                                       "train": speed_rc == 0, "export": export_rc == 0}}
if cpu and dev:
    summary["first_steps_loss"] = {"cpu": cpu[0]["train_loss"], "device": dev[0]["train_loss"],
                                   "abs_diff": abs(cpu[0]["train_loss"] - dev[0]["train_loss"])}
    summary["loss_agrees"] = summary["first_steps_loss"]["abs_diff"] <= 5e-3
if speed:
    summary["images_per_second"] = [round(e["images_per_second"], 1) for e in speed]
    summary["val_acc"] = [round(e["val_acc"], 4) for e in speed]
    summary["train_and_eval_seconds"] = seconds
export = out / "export.json"
if export.is_file():
    report = json.loads(export.read_text())
    summary["export"] = {k: report.get(k) for k in ("path", "opset", "seconds", "parity")}
summary["passed"] = all(summary["steps"].values()) and summary.get("loss_agrees", False)
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
sys.exit(0 if summary["passed"] else 1)
EOF
