"""Learning-curve PNGs from a run's metrics.jsonl (matplotlib is optional and imported lazily)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot_learning_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Plot train loss/accuracy per step and eval pass@K per evaluation; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping learning_curves.png (pip install trm_core[plot])",
              file=sys.stderr)
        return None
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    panels = [("train/lm_loss", "train loss"), ("train/accuracy", "train token accuracy"),
              ("train/exact_accuracy", "train exact accuracy")]
    pass_keys = sorted({k for r in records for k in r if k.startswith("ARC/pass@")},
                       key=lambda k: int(k.split("@")[1]))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5 * (len(panels) + 1), 3.6))
    for ax, (key, title) in zip(axes, panels):
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        ax.set_title(title)
        ax.set_xlabel("step")
    ax = axes[-1]
    for key in pass_keys:
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*pts), marker="o", label=key.split("/")[1])
    ax.set_title("eval pass@K")
    ax.set_xlabel("step")
    if pass_keys:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return Path(out_path)
