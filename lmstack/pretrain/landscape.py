"""The loss landscape around a trained model: loss along two random directions in weight space.

Directions are filter-normalised (Li et al., 2018, "Visualizing the Loss Landscape of Neural
Nets"): a random Gaussian direction is rescaled row by row (each output unit, a "filter") to the
norm of the matching row of the weights, so a step of 1 changes every unit by as much as it
weighs and landscapes of differently scaled models compare. Norm weights (1-D) are left still.
The plot shows loss(w + a d1 + b d2) on a grid of (a, b); a trained model sits in a basin at 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lmstack.errors import LmstackError
from lmstack.home import atomic_path, check_output
from lmstack.hub.load import load_model
from lmstack.pretrain.corpus import corpus_files
from lmstack.pretrain.shards import is_shard_dir, text_windows


@dataclass
class Landscape:
    alphas: list[float]
    losses: list[list[float]]  # losses[i][j] at (alphas[i], alphas[j])
    center_loss: float

    @property
    def min_loss(self) -> float:
        return min(min(row) for row in self.losses)

    @property
    def max_loss(self) -> float:
        return max(max(row) for row in self.losses)


def filter_normalised_direction(model: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction with each row scaled to the norm of the same row of the weights."""
    direction = {}
    for name, weight in model.named_parameters():
        if weight.ndim < 2:
            direction[name] = torch.zeros_like(weight)
            continue
        random = torch.randn(weight.shape, generator=generator).to(weight)
        rows, weight_rows = random.flatten(1), weight.detach().flatten(1)
        scale = weight_rows.norm(dim=1, keepdim=True) / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        direction[name] = (rows * scale).view_as(weight)
    return direction


@torch.no_grad()
def _loss(model: torch.nn.Module, batch: torch.Tensor) -> float:
    logits = model(batch)[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).item()


def loss_landscape(model: str, data: str | os.PathLike, out: str | os.PathLike, *, points: int = 11,
                   span: float = 1.0, windows: int = 8, max_len: int = 256, seed: int = 0,
                   overwrite: bool = False) -> Landscape:
    """Measure the loss on a `points` x `points` grid over [-span, span]^2 and plot it to `out` (PNG)."""
    out = check_output(out, overwrite=overwrite, directory=False)
    check_output(out.with_suffix(".json"), overwrite=overwrite, directory=False)
    if not is_shard_dir(data):
        corpus_files([data])  # before the model loads
    bundle = load_model(model, device="cpu", dtype="fp32")
    batch = text_windows(data, bundle.tokenizer, windows, max_len)
    network = bundle.model.eval()
    generator = torch.Generator().manual_seed(seed)
    d1, d2 = (filter_normalised_direction(network, generator) for _ in range(2))
    original = {name: p.detach().clone() for name, p in network.named_parameters()}
    alphas = torch.linspace(-span, span, points).tolist()
    losses = []
    try:
        for a in alphas:
            row = []
            for b in alphas:
                with torch.no_grad():
                    for name, p in network.named_parameters():
                        p.copy_(original[name] + a * d1[name] + b * d2[name])
                row.append(_loss(network, batch))
            losses.append(row)
    finally:
        with torch.no_grad():
            for name, p in network.named_parameters():
                p.copy_(original[name])
    result = Landscape(alphas, losses, _loss(network, batch))
    _plot(result, out, bundle.name)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"alphas": alphas, "losses": losses, "center_loss": result.center_loss,
                                   "model": str(model), "data": str(data), "seed": seed}, indent=2))
    return result


def _plot(result: Landscape, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.log(np.array(result.losses))
    fig, ax = plt.subplots(figsize=(6, 5))
    filled = ax.contourf(result.alphas, result.alphas, grid.T, levels=30, cmap="viridis")
    ax.contour(result.alphas, result.alphas, grid.T, levels=15, colors="white", linewidths=0.4)
    ax.plot(0, 0, "r*", markersize=12, label="trained weights")
    fig.colorbar(filled, ax=ax, label="log loss")
    ax.set_xlabel("direction 1 (filter-normalised)")
    ax.set_ylabel("direction 2 (filter-normalised)")
    ax.set_title(f"loss landscape: {title}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
