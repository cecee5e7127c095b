"""fer-bench's outputs: a terminal table, JSON with every figure, a Markdown report and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fer_runtime import LABELS


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def accuracy_table(acc: dict[str, Any]) -> list[str]:
    rows = ["| backend | accuracy | macro-F1 | argmax agreement | max abs logit diff | " + " | ".join(f"recall {l}" for l in LABELS) + " |",
            "|---|---|---|---|---|" + "---|" * len(LABELS)]
    for name, r in acc["backends"].items():
        rows.append(f"| {name} | {r['accuracy']:.2%} | {r['macro_f1']:.3f} | {r['argmax_agreement']:.2%} | "
                    f"{r['max_abs_logit_diff']:.1e} | " + " | ".join(f"{v:.2f}" for v in r["recall"]) + " |")
    return rows


def latency_table(lat: dict[str, Any], mode: str) -> list[str]:
    rows = ["| threads | batch | backend | p50 ms | p90 ms | p99 ms | images/s | speed-up vs PyTorch | GFLOP/s | of fp32 peak |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in lat["cells"]:
        if c["mode"] != mode:
            continue
        rows.append(f"| {c['threads']} | {c['batch']} | {c['backend']} | {c['p50_ms']:.3f} | {c['p90_ms']:.3f} | "
                    f"{c['p99_ms']:.3f} | {c['images_per_second']:,.0f} | {c['speedup_vs_pytorch']:.2f}x | "
                    f"{c['achieved_gflops']:.1f} | {_fmt_pct(c['fraction_of_peak'])} |")
    return rows


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# fer-bench report",
        "",
        f"Command: `{result['command']}`  ",
        f"Model: `{result['model']['model']}` ({result['model']['arch']}), PyTorch twin `{result['model']['checkpoint']}`  ",
        f"Machine: {env['cpu']} ({', '.join(env['cpu_flags'])}), {env['logical_cpus']} logical CPUs; "
        f"versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + f"; ORT providers: {', '.join(env.get('ort_providers', []))}",
        "",
    ]
    acc = result.get("accuracy")
    if acc is not None:
        lines += [f"## Accuracy on {acc['split']} ({acc['faces']} faces, the same preprocessed tensors for every backend)", "",
                  *accuracy_table(acc), ""]
    elif result.get("accuracy_skipped"):
        lines += ["## Accuracy", "", f"Not run: {result['accuracy_skipped']}", ""]
    lat = result.get("latency")
    if lat is not None:
        peaks = ", ".join(f"{t} thread(s) {g:.0f} GFLOP/s" for t, g in lat["peak_gflops"].items())
        lines += ["## Latency", "",
                  f"{lat['flops_per_image'] / 1e6:.1f} MFLOP per image (convolutions and linear layers). "
                  f"Measured fp32 matmul peak (ONNX Runtime MatMul, best of sizes 512 and 1024): {peaks}; int8 can exceed it "
                  f"(VNNI does four 8-bit multiply-adds per 32-bit lane). Backends ran interleaved, idle worker threads "
                  f"sleeping rather than spinning; speed-ups are medians of per-round time ratios against {lat['reference']}.", ""]
        for mode, title in (("model", "Model only (preprocessed float32 input)"),
                            ("end_to_end", "End to end (raw uint8 faces -> NumPy preprocessing -> inference -> softmax)")):
            lines += [f"### {title}", "", *latency_table(lat, mode), ""]
    return "\n".join(lines)


def terminal(result: dict[str, Any]) -> str:
    out = []
    acc = result.get("accuracy")
    if acc is not None:
        out.append(f"accuracy on {acc['split']} ({acc['faces']} faces):")
        out.append(f"  {'backend':20s} {'accuracy':>9s} {'macro-F1':>9s} {'agree':>8s} {'max|dlogit|':>11s}")
        for name, r in acc["backends"].items():
            out.append(f"  {name:20s} {r['accuracy']:9.2%} {r['macro_f1']:9.3f} {r['argmax_agreement']:8.2%} {r['max_abs_logit_diff']:11.1e}")
    elif result.get("accuracy_skipped"):
        out.append(f"accuracy: not run: {result['accuracy_skipped']}")
    lat = result.get("latency")
    if lat is not None:
        for mode in ("model", "end_to_end"):
            out.append(f"latency, {mode.replace('_', ' ')} (p50 ms / images/s / speed-up vs {lat['reference']}):")
            out.append(f"  {'thr':>3s} {'batch':>5s} {'backend':20s} {'p50 ms':>9s} {'p99 ms':>9s} {'images/s':>10s} {'speed-up':>8s} {'fp32pk':>7s}")
            for c in lat["cells"]:
                if c["mode"] == mode:
                    out.append(f"  {c['threads']:3d} {c['batch']:5d} {c['backend']:20s} {c['p50_ms']:9.3f} {c['p99_ms']:9.3f} "
                               f"{c['images_per_second']:10,.0f} {c['speedup_vs_pytorch']:7.2f}x {_fmt_pct(c['fraction_of_peak']):>7s}")
    return "\n".join(out)


# One (line style, marker) per thread count, in ascending order of threads: told apart without colour.
THREAD_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def figure(result: dict[str, Any]) -> Any:
    """The plot as a matplotlib figure: p50 latency against batch size (model only, end to end), one
    colour per backend and one line style and marker per thread count, the legend outside the data,
    and the accuracy the run measured per backend (or why it was not measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = result["latency"]
    fig = plt.figure(figsize=(15, 5.2))
    grid = fig.add_gridspec(1, 3, width_ratios=(1, 1, 0.8))
    latency_axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    latency_axes[1].sharey(latency_axes[0])
    acc_ax = fig.add_subplot(grid[0, 2])
    backends = sorted({c["backend"] for c in lat["cells"]})
    colors = {b: plt.cm.tab10(i % 10) for i, b in enumerate(backends)}
    thread_counts = sorted({c["threads"] for c in lat["cells"]})
    styles = {t: THREAD_STYLES[i % len(THREAD_STYLES)] for i, t in enumerate(thread_counts)}
    for ax, mode in zip(latency_axes, ("model", "end_to_end")):
        series: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for c in lat["cells"]:
            if c["mode"] == mode:
                series.setdefault((c["backend"], c["threads"]), []).append(c)
        for (backend, threads), cells in sorted(series.items()):
            cells.sort(key=lambda c: c["batch"])
            linestyle, marker = styles[threads]
            ax.plot([c["batch"] for c in cells], [c["p50_ms"] for c in cells], color=colors[backend],
                    linestyle=linestyle, marker=marker, markersize=5,
                    label=f"{backend}, {threads} thread{'s' if threads > 1 else ''}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("p50 latency per call (ms)")
        ax.set_title("model only" if mode == "model" else "end to end (preprocessing included)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = latency_axes[1].get_legend_handles_labels()
    # Below the plots, so that no line or point is covered.
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, max(1, len(labels))),
               fontsize=8, frameon=False)
    _accuracy_panel(acc_ax, result)
    fig.suptitle(f"fer-bench: {result['model']['model']} on {result['environment']['cpu']}")
    fig.tight_layout()
    return fig


def _accuracy_panel(ax: Any, result: dict[str, Any]) -> None:
    acc = result.get("accuracy")
    if acc is None:
        reason = result.get("accuracy_skipped") or "not part of this run"
        ax.text(0.5, 0.5, "accuracy not measured:\n" + reason[:120], ha="center", va="center", wrap=True, fontsize=8,
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    names = list(acc["backends"])
    values = [100 * acc["backends"][n]["accuracy"] for n in names]
    ys = list(range(len(names)))[::-1]  # the reference (first backend) on top
    ax.plot(values, ys, "o", color="black")
    for x, y in zip(values, ys):
        ax.annotate(f"{x:.2f}%", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    spread = max(max(values) - min(values), 0.5)
    ax.set_xlim(min(values) - spread, max(values) + spread)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_yticks(ys, names, fontsize=8)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(f"accuracy on {acc['split']} ({acc['faces']:,} faces)")
    ax.grid(alpha=0.3, axis="x")


def plot(result: dict[str, Any], path: Path) -> None:
    """Write :func:`figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(result)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight" keeps the legend below the axes in the file
    plt.close(fig)


def write_all(result: dict[str, Any], out_dir: Path, stem: str = "fer_bench") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(markdown(result))
    if result.get("latency") is not None:
        paths.append(out_dir / f"{stem}.png")
        plot(result, paths[-1])
    return paths
