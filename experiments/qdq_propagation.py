"""Every int8 model with and without ONNX Runtime's QDQPropagationTransformer: outputs and batch-1 time.

    python experiments/qdq_propagation.py [--rounds 400] [-o benchmarks/results/qdq]

The transformer moves the first QuantizeLinear of our int8 graphs above the full-resolution MaxPool,
where ORT runs a slow NCHW uint8 pool; fer_runtime.session leaves it out. For each named int8 model
(wheel and checkout), two sessions on one thread, identical but for that transformer: their outputs on
64 random faces (must be bit-identical), and batch-1 ``session.run`` times, the two sessions alternated
call by call in a random order each round; the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fer_bench.env import describe, environment
from fer_runtime.bundled import model_registry, read_bundled
from fer_runtime.session import DISABLED_OPTIMIZERS


def session(data: bytes, disabled: list[str]) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def compare(name: str, rounds: int, rng: np.random.Generator) -> dict:
    data = read_bundled(name)
    plain, ours = session(data, []), session(data, list(DISABLED_OPTIMIZERS))
    feed = plain.get_inputs()[0].name
    x = rng.normal(size=(64, 1, 48, 48)).astype(np.float32)
    identical = bool(np.array_equal(plain.run(None, {feed: x})[0], ours.run(None, {feed: x})[0]))
    one = {feed: x[:1]}
    for s in (plain, ours):
        for _ in range(50):
            s.run(None, one)
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for key in rng.permutation(["with", "without"]):
            s = plain if key == "with" else ours
            t0 = time.perf_counter()
            s.run(None, one)
            times[key].append(time.perf_counter() - t0)
    ratio = float(np.median(np.array(times["without"]) / np.array(times["with"])))
    return {"model": name, "bit_identical": identical, "with_ms": float(np.median(times["with"]) * 1e3),
            "without_ms": float(np.median(times["without"]) * 1e3), "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("-o", "--out-dir", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = sorted(n for n in model_registry() if n.endswith("-int8"))
    rows = [compare(n, args.rounds, rng) for n in names]
    env = environment()
    lines = [f"Batch 1, 1 thread, model only, {args.rounds} alternated calls each; {describe(env)}", "",
             "| model | outputs | with the transformer | without (fer_runtime) | without / with |", "|---|---|---|---|---|"]
    lines += [f"| `{r['model']}` | {'bit-identical' if r['bit_identical'] else 'DIFFER'} | {r['with_ms']:.3f} ms | "
              f"{r['without_ms']:.3f} ms | {r['ratio']:.2f}x |" for r in rows]
    print("\n".join(lines))
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "qdq.json").write_text(json.dumps({"rows": rows, "environment": env}, indent=1))
        (args.out_dir / "qdq.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
