"""Training-side benchmarks: dataset load time (first parse vs cache) and training throughput.

    python -m fer_bench.training [--data PATH] [--rounds 5] [--steps 20] [--json out.json]

Throughput runs real optimisation steps of an architecture (augmentation included, as in
fer-train) in several precision/memory-format variants. The variants are interleaved
round by round (A B C D, A B C D, ...) so the machine's drift hits all alike; the figures
are medians over rounds and the speed-up is computed within each round.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

# name -> (autocast dtype name or None, channels_last)
VARIANTS: dict[str, tuple[str | None, bool]] = {
    "fp32": (None, False),
    "fp32+channels_last": (None, True),
    "bf16": ("bfloat16", False),
    "bf16+channels_last": ("bfloat16", True),
}


def time_data_load(path: Path | None) -> dict[str, float]:
    from fer_train.data import load_fer2013

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        data = load_fer2013(path, cache_dir=cache)  # parses the CSV and writes the cache
        first = time.perf_counter() - t0
        cached = []
        for _ in range(3):
            t0 = time.perf_counter()
            load_fer2013(path, cache_dir=cache)
            cached.append(time.perf_counter() - t0)
    return {"rows": len(data), "first_parse_s": first, "cached_load_s": statistics.median(cached)}


def time_training(arch: str, path: Path | None, batch_size: int, steps: int, rounds: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from fer_runtime import preprocess
    from fer_train.augment import AugmentConfig, augment
    from fer_train.data import load_fer2013
    from fer_train.models import build_model

    data = load_fer2013(path).split("Training")
    n = batch_size * steps
    x_all = torch.from_numpy(preprocess(data.images[:n]))
    y_all = torch.from_numpy(data.labels[:n])
    gen = torch.Generator().manual_seed(0)
    setups = {}
    for name, (dtype, channels_last) in VARIANTS.items():
        torch.manual_seed(0)
        model = build_model(arch)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        setups[name] = (model, torch.optim.Adam(model.parameters(), 1e-3), dtype, channels_last)

    def run(name: str, n_steps: int) -> float:
        model, opt, dtype, channels_last = setups[name]
        ctx = torch.autocast("cpu", dtype=getattr(torch, dtype)) if dtype else nullcontext()
        model.train()
        t0 = time.perf_counter()
        for s in range(n_steps):
            sl = slice(s * batch_size, (s + 1) * batch_size)
            xb = augment(x_all[sl], AugmentConfig(), gen)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with ctx:
                loss = F.cross_entropy(model(xb).float(), y_all[sl])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return n_steps * batch_size / (time.perf_counter() - t0)

    for name in setups:  # warm-up: oneDNN primitive creation, allocator
        run(name, 3)
    per_round: dict[str, list[float]] = {name: [] for name in setups}
    from tqdm import tqdm

    for _ in tqdm(range(rounds), desc="rounds", leave=False):
        for name in setups:
            per_round[name].append(run(name, steps))
    base = per_round["fp32"]
    return {
        "arch": arch,
        "batch_size": batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "images_per_second": {k: statistics.median(v) for k, v in per_round.items()},
        "speedup_vs_fp32": {k: statistics.median(a / b for a, b in zip(v, base)) for k, v in per_round.items()},
        "raw": per_round,
    }


@app.command()
def main(
    data: Annotated[Optional[Path], typer.Option(envvar="FER2013_PATH", help="FER2013 source (default $FER2013_PATH).")] = None,
    arch: Annotated[str, typer.Option(help="Architecture to time.")] = "seed",
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per variant per round.")] = 20,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (medians are reported).")] = 5,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write every figure here.")] = None,
) -> None:
    """Time dataset loading (first parse vs cache) and training throughput (fp32 vs bf16/channels_last)."""
    from fer_train.data import DataError

    try:
        load = time_data_load(data)
        speed = time_training(arch, data, batch_size, steps, rounds)
    except (DataError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    from fer_bench.env import describe, environment

    env = environment()
    typer.echo(f"{describe(env)}; torch threads {env['torch_threads']}")
    typer.echo(f"dataset load ({load['rows']} rows): first parse {load['first_parse_s']:.2f} s, "
               f"cached {load['cached_load_s']:.3f} s ({load['first_parse_s'] / load['cached_load_s']:.0f}x faster)")
    typer.echo(f"training throughput, {arch}, batch {batch_size}, median of {rounds} interleaved rounds of {steps} steps:")
    typer.echo(f"  {'variant':20s} {'images/s':>9s} {'vs fp32':>8s}")
    for name, ips in speed["images_per_second"].items():
        typer.echo(f"  {name:20s} {ips:9.0f} {speed['speedup_vs_fp32'][name]:7.2f}x")
    if json_out:
        json_out.write_text(json.dumps({"environment": env, "data_load": load, "training": speed}, indent=1))
        typer.echo(f"wrote {json_out}")


if __name__ == "__main__":
    app()
