"""Cutting a model down: new config and state dict without some layers, heads or MLP channels.

A config describes every layer alike, so width pruning removes the same number of heads (per
key-value group, so grouped-query attention keeps its shape) and of MLP channels from every
layer; which ones goes by each layer's own importance scores.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from lmstack.errors import LmstackError
from lmstack.model.config import ModelConfig

State = dict[str, torch.Tensor]
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.*)$")


def drop_layers(config: ModelConfig, state: State, drop: list[int]) -> tuple[ModelConfig, State]:
    """The model without the layers in `drop`; later layers are renumbered."""
    if len(set(drop)) >= config.num_layers:
        raise LmstackError(f"cannot drop {len(set(drop))} of {config.num_layers} layers; keep at least one")
    kept = [i for i in range(config.num_layers) if i not in set(drop)]
    new_index = {old: new for new, old in enumerate(kept)}
    pruned: State = {}
    for name, tensor in state.items():
        match = _LAYER.match(name)
        if not match:
            pruned[name] = tensor
        elif int(match.group(1)) in new_index:
            pruned[f"model.layers.{new_index[int(match.group(1))]}.{match.group(2)}"] = tensor
    layer_types = [config.layer_types[i] for i in kept]
    return dataclasses.replace(config, num_layers=len(kept), layer_types=layer_types), pruned


def drop_heads(config: ModelConfig, state: State, importance: torch.Tensor, per_group: int) -> tuple[ModelConfig, State]:
    """Remove the `per_group` least important query heads of every key-value group in every layer."""
    group = config.num_heads // config.num_kv_heads
    if not 0 < per_group < group:
        raise LmstackError(f"each key-value group has {group} query heads; remove between 1 and {group - 1} per group")
    pruned = dict(state)
    for layer in range(config.num_layers):
        scores = importance[layer].view(config.num_kv_heads, group)
        keep_in_group = scores.argsort(dim=1, descending=True)[:, : group - per_group].sort(dim=1).values
        heads = (keep_in_group + torch.arange(config.num_kv_heads)[:, None] * group).flatten()
        rows = (heads[:, None] * config.head_dim + torch.arange(config.head_dim)).flatten()
        prefix = f"model.layers.{layer}.self_attn."
        pruned[prefix + "q_proj.weight"] = state[prefix + "q_proj.weight"][rows]
        if prefix + "q_proj.bias" in state:
            pruned[prefix + "q_proj.bias"] = state[prefix + "q_proj.bias"][rows]
        pruned[prefix + "o_proj.weight"] = state[prefix + "o_proj.weight"][:, rows]
    return dataclasses.replace(config, num_heads=config.num_kv_heads * (group - per_group)), pruned


def drop_channels(config: ModelConfig, state: State, importance: torch.Tensor, fraction: float) -> tuple[ModelConfig, State]:
    """Remove the least important `fraction` of MLP channels in every layer (rounded to a multiple of 8)."""
    keep = int(config.intermediate_size * (1 - fraction)) // 8 * 8
    if not 0 < keep < config.intermediate_size:
        raise LmstackError(f"an MLP channel fraction of {fraction} leaves {keep} of {config.intermediate_size} "
                           "channels; choose a fraction between 0 and 1 that keeps some")
    pruned = dict(state)
    for layer in range(config.num_layers):
        channels = importance[layer].argsort(descending=True)[:keep].sort().values
        prefix = f"model.layers.{layer}.mlp."
        pruned[prefix + "gate_proj.weight"] = state[prefix + "gate_proj.weight"][channels]
        pruned[prefix + "up_proj.weight"] = state[prefix + "up_proj.weight"][channels]
        pruned[prefix + "down_proj.weight"] = state[prefix + "down_proj.weight"][:, channels]
    return dataclasses.replace(config, intermediate_size=keep), pruned
