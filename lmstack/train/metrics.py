"""What a run reports: a JSONL line per logged step, TensorBoard events when tensorboard is
installed, and a PNG of loss, learning rate and gradient norm at the end.

Only the main process writes. The full history lives in memory (and in every checkpoint), so a
resumed run rewrites `metrics.jsonl` from it and the file never holds steps twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmstack.home import atomic_path, atomic_write_text

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


class MetricsLog:
    def __init__(self, out_dir: Path, *, enabled: bool, history: list[dict[str, Any]] | None = None):
        self.out_dir = out_dir
        self.enabled = enabled
        self.history: list[dict[str, Any]] = list(history or [])
        self._tensorboard = None
        if enabled:
            atomic_write_text(out_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.history))
            self._tensorboard = _tensorboard_writer(out_dir / "tensorboard")

    def log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self.enabled and self.history:
            plot_metrics(self.history, self.out_dir / PLOT_FILE)


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(directory))


def plot_metrics(history: list[dict[str, Any]], path: Path) -> Path:
    """Three panels: train (and validation) loss, learning rate, gradient norm, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[key]) for r in history if key in r and math.isfinite(r[key])]
        return [s for s, _ in points], [v for _, v in points]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(*series("loss"), label="train")
    steps, values = series("val_loss")
    if steps:
        axes[0].plot(steps, values, "o-", label="validation")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(*series("lr"))
    axes[1].set_title("learning rate")
    axes[2].plot(*series("grad_norm"))
    axes[2].set_title("gradient norm (before clipping)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
