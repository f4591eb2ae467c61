"""What a recipe's method makes trainable, and what a finished run leaves on disk.

full: every weight trains; the result is a complete model directory.
lora / dora: the base is frozen, adapters train; the result is a peft-compatible adapter directory.
qlora: as lora, on a base whose linear layers are stored in NF4 (4 bits).

Every run directory also holds the recipe it ran, metrics.jsonl and metrics.png, and the result
is recorded in the registry with its parent model, recipe, data and final metrics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lmstack.device import resolve_device
from lmstack.train.core import TrainResult
from lmstack.train.recipe import MethodSection, Recipe

RECIPE_FILE = "recipe.yaml"


def load_base(recipe: Recipe):
    """The recipe's base model in float32 on the CPU (the loop moves it; master weights stay fp32)."""
    import lmstack

    return lmstack.load(recipe.model.ref, device="cpu", dtype="fp32")


def lora_config(method: MethodSection):
    from lmstack.peft import LoraConfig

    return LoraConfig(r=method.r, alpha=method.alpha, dropout=method.dropout, target_modules=method.target_modules,
                      use_rslora=method.use_rslora, use_dora=method.type == "dora")


def prepare_model(model: torch.nn.Module, recipe: Recipe) -> None:
    """Make the parameters the method trains trainable (in place); LoRA adapters start as a no-op."""
    method = recipe.method
    torch.manual_seed(recipe.run.seed)  # adapter initialisation is part of the run's reproducibility
    if method.type == "full":
        model.requires_grad_(True)
        return
    from lmstack.peft import apply_lora, prepare_qlora

    if method.type == "qlora":
        on_gpu = resolve_device(recipe.model.device).type == "cuda"
        prepare_qlora(model, lora_config(method), compute_dtype=torch.bfloat16 if on_gpu else torch.float32)
    else:
        apply_lora(model, lora_config(method))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def save_result(loaded, model: torch.nn.Module, recipe: Recipe, result: TrainResult, operation: str) -> Path | None:
    """Write the trained model or adapter into the run directory and record it; main process only."""
    if not is_main_process():
        return None
    from lmstack import registry
    from lmstack.home import atomic_write_text

    out_dir = Path(recipe.run.out_dir)
    atomic_write_text(out_dir / RECIPE_FILE, recipe.to_yaml())
    if recipe.method.type == "full":
        from lmstack.model import hf_io

        path = hf_io.write_model_dir(out_dir / "model", loaded.config, model.state_dict(), loaded.tokenizer,
                                     loaded.generation_config)
        kind = "model"
    else:
        from lmstack.peft import save_adapter

        path = save_adapter(model, out_dir / "adapter", base_model=str(loaded.path), config=lora_config(recipe.method))
        kind = "adapter"
    registry.record(
        kind, path, name=f"{loaded.name}-{operation}-{recipe.method.type}", operation=operation,
        source=recipe.model.ref, parents=[loaded.registry_id], recipe=recipe.model_dump(mode="json"),
        metadata=_metadata(recipe, result),
    )
    return path


def _metadata(recipe: Recipe, result: TrainResult) -> dict[str, Any]:
    final = {k: v for k, v in result.metrics.items() if k not in ("epoch", "tokens_per_s")}
    return {"data": {"train": recipe.data.train, "val": recipe.data.val}, "steps": result.steps,
            "stopped_early": result.stopped_early, "metrics": final}
