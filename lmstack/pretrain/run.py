"""`lmstack train pretrain`: a model trained from raw text, with the numbers that show it learned.

    pretrain(recipe)                   one run; perplexity on held-out windows vs the unigram bar
    pretrain(recipe, sizes=[2, 3, 4])  one run per depth on the same shards, then a power law
                                       loss = a * compute^b fitted to their final losses, plotted
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.home import atomic_path, check_output
from lmstack.pretrain.recipe import with_defaults
from lmstack.pretrain.shards import is_shard_dir
from lmstack.pretrain.sizing import shape_for_depth, training_flops
from lmstack.train.recipe import Recipe
from lmstack.train.run import train_recipe


@dataclass
class PretrainResult:
    depth: int | None
    model: str
    steps: int
    tokens: int
    flops: float
    val_loss: float
    perplexity: float
    unigram_perplexity: float | None

    def summary(self) -> str:
        if not math.isfinite(self.perplexity):
            return f"trained {self.steps} steps (no held-out windows: data.val_fraction is 0) -> {self.model}"
        bar = f" (unigram baseline {self.unigram_perplexity:.1f})" if self.unigram_perplexity else ""
        return f"held-out perplexity {self.perplexity:.2f}{bar} after {self.steps} steps -> {self.model}"


def pretrain(recipe: Recipe, *, resume: bool = False, overwrite: bool = False) -> PretrainResult | None:
    """Train as the recipe says; score the model's held-out perplexity in the registry.

    Under torchrun only the main process saves and scores; the others return None."""
    recipe = with_defaults(recipe)
    run = train_recipe(recipe, resume=resume, overwrite=overwrite)
    if run.output is None:
        return None
    artifact = registry.find_by_path(run.output)
    metadata = artifact.metadata or {}
    val_loss = run.train.metrics.get("val_loss", math.nan)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    tokens = run.train.steps * recipe.run.batch_size * recipe.run.grad_accum * processes * (recipe.data.max_len - 1)
    result = PretrainResult(recipe.model.depth, str(run.output), run.train.steps, tokens,
                            training_flops(_config_of(run.output), tokens), val_loss, math.exp(val_loss),
                            metadata.get("unigram_perplexity"))
    if math.isfinite(val_loss):
        shards = registry.get(artifact.parents[-1])  # the data the held-out windows come from
        registry.add_score(artifact.id, "perplexity", result.perplexity, dataset=str(shards.path),
                           details={"held_out_windows": metadata.get("val_windows"),
                                    "unigram_perplexity": result.unigram_perplexity})
    return result


def _config_of(model_dir: Path):
    from lmstack.model import hf_io

    return hf_io.read_config(Path(model_dir))


def pretrain_sizes(recipe: Recipe, depths: Sequence[int], *, overwrite: bool = False) -> list[PretrainResult]:
    """One run per depth on the same data (shards made once), then the loss-vs-compute fit and plot."""
    if not depths or len(set(depths)) < 2:
        raise LmstackError("--sizes needs at least two different depths, e.g. --sizes 2,3,4")
    if not recipe.model.tokenizer:
        raise LmstackError("--sizes trains from scratch; pass --tokenizer DIR")
    for depth in depths:
        shape_for_depth(depth, recipe.model.width, recipe.model.heads)
    out_dir = check_output(recipe.run.out_dir, overwrite=overwrite)
    results = []
    data = recipe.data.train
    for depth in sorted(set(depths)):
        raw = recipe.model_dump(mode="json", exclude_unset=True)
        raw.setdefault("model", {})["depth"] = depth
        raw.setdefault("run", {})["out_dir"] = str(out_dir / f"d{depth}")
        raw.setdefault("data", {})["train"] = data
        result = pretrain(Recipe.model_validate(raw), overwrite=overwrite)
        results.append(result)
        if not is_shard_dir(data):  # later sizes train on the shards the first run made
            data = str(out_dir / f"d{depth}" / "data")
    fit = power_law([r.flops for r in results], [r.val_loss for r in results])
    with atomic_path(out_dir / "scaling.json") as tmp:
        tmp.write_text(json.dumps({"runs": [asdict(r) for r in results], "fit": fit}, indent=2))
    plot_scaling(results, fit, out_dir / "scaling.png")
    return results


def power_law(compute: Sequence[float], loss: Sequence[float]) -> dict[str, float]:
    """Least-squares fit of log(loss) = log(a) + b * log(compute): loss = a * compute^b."""
    import numpy as np

    x, y = np.log(np.asarray(compute)), np.log(np.asarray(loss))
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise LmstackError("a run has no finite validation loss to fit; give data.val_fraction > 0")
    b, log_a = np.polyfit(x, y, 1)
    residual = y - (log_a + b * x)
    return {"a": float(np.exp(log_a)), "b": float(b), "rmse_log": float(np.sqrt((residual ** 2).mean()))}


def plot_scaling(results: Sequence[PretrainResult], fit: dict[str, float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    compute = np.array([r.flops for r in results])
    ax.scatter(compute, [r.val_loss for r in results], zorder=3)
    for r in results:
        ax.annotate(f"d{r.depth}", (r.flops, r.val_loss), textcoords="offset points", xytext=(5, 5))
    line = np.geomspace(compute.min() / 1.5, compute.max() * 1.5, 50)
    ax.plot(line, fit["a"] * line ** fit["b"], "--", label=f"loss = {fit['a']:.3g} C^{fit['b']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("held-out loss")
    ax.set_title("loss vs compute")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
