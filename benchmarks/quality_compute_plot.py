"""Draw a ``bench_quality_compute`` CSV: FD, precision and recall against CPU-seconds.

One line per DiT arm and EMA decay (its step counts), the sampler sweep as points,
each autoencoder's reconstruction ceiling and the real-image control as horizontal
lines, the issue-12 targets (precision 0.5, recall 0.25) in grey.

    python -m benchmarks.bench_quality_compute --plot benchmarks/results/quality_compute_<date>.csv
"""

from __future__ import annotations

import csv
import os

from benchmarks._util import REPO

TARGETS = {"precision": 0.5, "recall": 0.25}


def _num(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def plot(path: str, out_dir: str | None = None) -> str:
    """Write ``docs/figures/<csv name>.png``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, metric in zip(axes, ["fd", "precision", "recall"]):
        lines: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            x, y = _num(r["cpu_s"]), _num(r[metric])
            if y is None:
                continue
            if r["arm"] == "real":
                ax.axhline(y, color="black", ls=":", lw=1, label="real images (control)")
            elif r["arm"].startswith("vq:"):
                ax.axhline(y, color="tab:brown", ls="--", lw=0.8, alpha=0.4 + 0.15 * min(
                    4, int(r["vq_steps"]) // 500))
                ax.annotate(f"{r['autoencoder']}@{r['vq_steps']}", (0.01, y), fontsize=6,
                            xycoords=("axes fraction", "data"), color="tab:brown")
            elif r["arm"] == "sampler":
                ax.scatter([x], [y], s=10, marker="x", color="grey")
            else:
                lines.setdefault(f"{r['arm'][4:]} ema {r['ema']}", []).append((x, y))
        for label, pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
        if metric in TARGETS:
            ax.axhline(TARGETS[metric], color="grey", lw=2, alpha=0.5, label="issue-12 target")
        ax.set_xscale("log")
        ax.set_xlabel("CPU-seconds (autoencoder + DiT training + sampling)")
        ax.set_title(f"{metric} (classifier space, held-out reference)")
    handles, labels = axes[1].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    out_dir = out_dir or os.path.join(REPO, "docs", "figures")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
