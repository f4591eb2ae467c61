"""SmoothQuant (Xiao et al., 2022): W8A8 made accurate by migrating activation outliers.

Activations have a few channels with values 10-100x larger than the rest, so quantizing a
token's activations to int8 with one scale crushes every other channel; weights are smooth. A
per-channel factor s_j = max|X_j|^α / max|W_j|^(1-α) divides the activations and multiplies the
weights (folded offline, see `smoothing.py`): α = 0.5 splits the difficulty evenly, larger α
moves more of it into the weights. Then weights are int8 per output channel and activations int8
per token, and the matmul runs on integers.
"""

from __future__ import annotations

import torch
from torch import nn

from lmstack.quant.calibration import LayerInputs
from lmstack.quant.smoothing import fold_scales, input_groups


@torch.no_grad()
def smoothing_scales(linears: list[nn.Linear], inputs: LayerInputs, alpha: float) -> torch.Tensor:
    weight_max = torch.stack([linear.weight.abs().amax(dim=0) for linear in linears]).amax(dim=0).float()
    scales = inputs.abs_max.clamp_min(1e-5).pow(alpha) / weight_max.clamp_min(1e-5).pow(1 - alpha)
    return scales.clamp_min(1e-5)


def smooth_block(block: nn.Module, stats: dict[str, LayerInputs], alpha: float) -> None:
    """Fold SmoothQuant factors into every input group of one decoder block, in place."""
    for group in input_groups(block):
        fold_scales(block, group, smoothing_scales(group.modules(block), stats[group.linears[0]], alpha))
