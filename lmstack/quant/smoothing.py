"""Moving scale between a layer's inputs and its weights without changing what the model computes.

For y = W x, any positive per-input-channel factors s give the same y with W' = W·diag(s) and
x' = x / s. The division is folded into whatever produced x: the RMSNorm before q/k/v and before
the MLP (its weight), `up_proj` before `down_proj` (its rows), `v_proj` before `o_proj` (when
every attention head has its own value head; with grouped-query attention several query heads
share one, and they would need one common factor, so `o_proj` is left alone).

AWQ uses this to make the weights of important inputs larger before rounding (their relative
rounding error shrinks); SmoothQuant uses it to move activation outliers into the weights so
activations quantize well to int8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmstack.model.transformer import Block, RMSNorm


@dataclass
class InputGroup:
    """Linear layers of one block that read the same input, and the op that writes it."""

    previous: nn.Module  # an RMSNorm or an nn.Linear
    linears: list[str]  # names inside the block

    def modules(self, block: Block) -> list[nn.Linear]:
        return [block.get_submodule(name) for name in self.linears]


def input_groups(block: Block) -> list[InputGroup]:
    mlp_norm = block.pre_feedforward_layernorm if block.sandwich else block.post_attention_layernorm
    groups = [
        InputGroup(block.input_layernorm, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
        InputGroup(mlp_norm, ["mlp.gate_proj", "mlp.up_proj"]),
        InputGroup(block.mlp.up_proj, ["mlp.down_proj"]),
    ]
    attention = block.self_attn
    if attention.v_proj.out_features == attention.o_proj.in_features:
        groups.append(InputGroup(attention.v_proj, ["self_attn.o_proj"]))
    return groups


@torch.no_grad()
def fold_scales(block: Block, group: InputGroup, scales: torch.Tensor) -> None:
    """Multiply the group's weight columns by `scales` and divide the previous op's output by them."""
    scales = scales.float()
    for linear in group.modules(block):
        linear.weight.mul_(scales.to(linear.weight.dtype))
    previous = group.previous
    if isinstance(previous, RMSNorm):  # output is norm(x) * (offset + w)
        effective = (previous.offset + previous.weight.float()) / scales
        previous.weight.copy_(effective - previous.offset)
    else:
        previous.weight.div_(scales.unsqueeze(1).to(previous.weight.dtype))
        if previous.bias is not None:
            previous.bias.div_(scales.to(previous.bias.dtype))
