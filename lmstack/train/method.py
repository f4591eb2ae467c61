"""What a recipe's method makes trainable.

full: every weight trains; the result is a complete model directory.
lora / dora: the base is frozen, adapters train; the result is a peft-compatible adapter directory.
qlora: as lora, on a base whose linear layers are stored in NF4 (4 bits).
"""

from __future__ import annotations

import torch

from lmstack.device import resolve_device
from lmstack.peft import LoraConfig, apply_lora, prepare_qlora
from lmstack.train.recipe import MethodSection, Recipe


def lora_config(method: MethodSection) -> LoraConfig:
    return LoraConfig(r=method.r, alpha=method.alpha, dropout=method.dropout, target_modules=method.target_modules,
                      use_rslora=method.use_rslora, use_dora=method.type == "dora")


def prepare_model(model: torch.nn.Module, recipe: Recipe) -> None:
    """Make the parameters the method trains trainable (in place); LoRA adapters start as a no-op."""
    method = recipe.method
    torch.manual_seed(recipe.run.seed)  # adapter initialisation is part of the run's reproducibility
    if method.type == "full":
        model.requires_grad_(True)
    elif method.type == "qlora":
        on_gpu = resolve_device(recipe.model.device).type == "cuda"
        prepare_qlora(model, lora_config(method), compute_dtype=torch.bfloat16 if on_gpu else torch.float32)
    else:
        apply_lora(model, lora_config(method))
