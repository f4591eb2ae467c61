"""How much each part of a model matters, measured on calibration text with forward hooks.

    block_influence    per layer: 1 - cos(hidden state in, hidden state out), averaged over tokens
                       (ShortGPT). A layer that barely turns its input does little; drop it first.
    head_importance    per layer and attention head: the mean norm of what the head writes into
                       the residual stream (its slice of o_proj applied to its output).
    channel_importance per layer and MLP channel: mean |activation| x norm of its down_proj column,
                       the size of its contribution to the residual stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def block_influence(model: nn.Module, batch: torch.Tensor) -> list[float]:
    """ShortGPT's block influence of every layer on `batch` [B, T] (lower: more redundant)."""
    scores: list[float] = [0.0] * len(model.model.layers)

    def hook(index: int):
        def measure(module, args, output):
            x, y = args[0].float(), output.float()
            scores[index] = float(1 - F.cosine_similarity(x, y, dim=-1).mean())
        return measure

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(model.model.layers)]
    try:
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return scores


@torch.no_grad()
def head_importance(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """[layers, heads]: the mean L2 norm of each head's contribution to the residual stream."""
    config = model.config
    result = torch.zeros(config.num_layers, config.num_heads)

    def hook(index: int, o_proj: nn.Linear):
        def measure(module, args):
            x = args[0].float()  # [B, T, heads x head_dim], the attention output before o_proj
            heads = x.view(*x.shape[:2], config.num_heads, config.head_dim)
            weight = o_proj.weight.float().view(-1, config.num_heads, config.head_dim)  # [hidden, H, D]
            written = torch.einsum("bthd,ohd->btho", heads, weight)
            result[index] = written.norm(dim=-1).mean(dim=(0, 1)).cpu()
        return measure

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(hook(i, layer.self_attn.o_proj))
               for i, layer in enumerate(model.model.layers)]
    try:
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return result


@torch.no_grad()
def channel_importance(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """[layers, intermediate]: mean |activation| of each MLP channel times its down_proj column norm."""
    config = model.config
    result = torch.zeros(config.num_layers, config.intermediate_size)

    def hook(index: int, down_proj: nn.Linear):
        def measure(module, args):
            activation = args[0].float().abs().mean(dim=(0, 1))
            result[index] = (activation * down_proj.weight.float().norm(dim=0)).cpu()
        return measure

    handles = [layer.mlp.down_proj.register_forward_pre_hook(hook(i, layer.mlp.down_proj))
               for i, layer in enumerate(model.model.layers)]
    try:
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return result
