"""How much each part of a model matters, measured on calibration text with forward hooks.

    block_influence    per layer: 1 - cos(hidden state in, hidden state out), averaged over tokens
                       (ShortGPT). A layer that barely turns its input does little; drop it first.
    head_importance    per layer and attention head: the mean norm of what the head writes into
                       the residual stream (its slice of o_proj applied to its output).
    channel_importance per layer and MLP channel: mean |activation| x norm of its down_proj column,
                       the size of its contribution to the residual stream.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _measure(model: nn.Module, batch: torch.Tensor, attach: Callable[[int, nn.Module], object]) -> None:
    """Run `batch` through `model` with the hook `attach(index, layer)` puts on each layer, then remove them."""
    handles = [attach(i, layer) for i, layer in enumerate(model.model.layers)]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()


def block_influence(model: nn.Module, batch: torch.Tensor) -> list[float]:
    """ShortGPT's block influence of every layer on `batch` [B, T] (lower: more redundant)."""
    scores: list[float] = [0.0] * len(model.model.layers)

    def attach(index: int, layer: nn.Module):
        def measure(module, args, output):
            scores[index] = float(1 - F.cosine_similarity(args[0].float(), output.float(), dim=-1).mean())
        return layer.register_forward_hook(measure)

    _measure(model, batch, attach)
    return scores


def _projection_input_scores(model: nn.Module, batch: torch.Tensor, projection: Callable[[nn.Module], nn.Linear],
                             score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """[layers, ...]: `score(input, weight)` of the projection `projection(layer)` picks in each layer."""
    rows: dict[int, torch.Tensor] = {}

    def attach(index: int, layer: nn.Module):
        linear = projection(layer)

        def measure(module, args):
            rows[index] = score(args[0].float(), linear.weight.float()).cpu()
        return linear.register_forward_pre_hook(measure)

    _measure(model, batch, attach)
    return torch.stack([rows[i] for i in range(len(rows))])


def head_importance(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """[layers, heads]: the mean L2 norm of each head's contribution to the residual stream."""
    heads, head_dim = model.config.num_heads, model.config.head_dim

    def written(attention: torch.Tensor, o_proj: torch.Tensor) -> torch.Tensor:
        per_head = attention.unflatten(-1, (heads, head_dim))  # the attention output [B, T, H, D]
        out = torch.einsum("bthd,ohd->btho", per_head, o_proj.view(-1, heads, head_dim))
        return out.norm(dim=-1).mean(dim=(0, 1))

    return _projection_input_scores(model, batch, lambda layer: layer.self_attn.o_proj, written)


def channel_importance(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """[layers, intermediate]: mean |activation| of each MLP channel times its down_proj column norm."""
    return _projection_input_scores(model, batch, lambda layer: layer.mlp.down_proj,
                                    lambda activation, down: activation.abs().mean(dim=(0, 1)) * down.norm(dim=0))
