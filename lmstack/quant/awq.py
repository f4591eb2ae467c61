"""AWQ (Lin et al., 2023): activation-aware weight quantization.

A small fraction of input channels carry large activations; errors on their weights cost the
most. Instead of keeping them in higher precision, AWQ scales those weight columns up before
rounding (and the inputs down, folded into the previous op, see `smoothing.py`): a larger weight
has a smaller rounding error relative to itself. The factor per channel is s = mean|x|^r, with
the exponent r picked by a grid search that minimises the quantized layers' output error on
calibration inputs. A second search then clips each group's range (AWQ's clipping step; here
weighted by each input's mean square, see `grids.quantize_rtn`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lmstack.quant.calibration import LayerInputs
from lmstack.quant.grids import Grid, quantize_rtn
from lmstack.quant.smoothing import fold_scales, input_groups

AWQ_GRID_POINTS = 20


@torch.no_grad()
def search_scales(linears: list[nn.Linear], grids: list[Grid], inputs: LayerInputs) -> torch.Tensor:
    """Per-input-channel scales for layers sharing one input: the best s = mean|x|^r found."""
    x = inputs.sample
    weights = [linear.weight.float() for linear in linears]
    targets = [x @ w.t() for w in weights]
    mean = inputs.abs_mean.clamp_min(1e-6)
    best_loss, best = float("inf"), torch.ones_like(mean)
    for step in range(AWQ_GRID_POINTS):
        ratio = step / AWQ_GRID_POINTS
        scales = mean.pow(ratio)
        scales = scales / (scales.max() * scales.min()).sqrt()  # centre the factors around 1
        loss = sum(
            (x @ (quantize_rtn(w * scales, grid).dequantize() / scales).t() - target).pow(2).mean().item()
            for w, grid, target in zip(weights, grids, targets)
        )
        if loss < best_loss:
            best_loss, best = loss, scales
    return best


def awq_block_scales(block: nn.Module, stats: dict[str, LayerInputs], grid_for: Callable[[str], Grid | None],
                     prefix: str) -> None:
    """Search and fold AWQ scales for every input group of one decoder block, in place."""
    for group in input_groups(block):
        grids = [grid_for(f"{prefix}{name}") for name in group.linears]
        if any(grid is None for grid in grids):
            continue
        scales = search_scales(group.modules(block), grids, stats[group.linears[0]])
        fold_scales(block, group, scales)
        _rescale_inputs(stats[group.linears[0]], scales)  # the group's shared inputs are now divided


def _rescale_inputs(inputs: LayerInputs, scales: torch.Tensor) -> None:
    inputs.hessian = inputs.hessian / scales.unsqueeze(0) / scales.unsqueeze(1)
    inputs.abs_max, inputs.abs_mean = inputs.abs_max / scales, inputs.abs_mean / scales
    if inputs.sample is not None:
        inputs.sample = inputs.sample / scales
