"""Draw the loss curve of a run (metrics.jsonl -> loss.png) with matplotlib's file-only backend."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    """Return the metrics rows of a run, skipping a torn last line."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def plot_loss(metrics_file: Path, out: Path, title: str = "training loss") -> Path | None:
    """Plot train_loss against step into a PNG; return its path, or None when nothing was logged."""
    by_step = {r["step"]: r for r in read_metrics(metrics_file) if r.get("train_loss") is not None}
    rows = [by_step[s] for s in sorted(by_step)]  # a resumed run redoes steps after its checkpoint: last wins
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
