"""Every quantization method, from one settings object to a model whose linear layers are quantized.

    int8         absmax or zero-point int8, per tensor, channel or group (round to nearest)
    int4         4-bit groups, round to nearest (the baseline GPTQ and AWQ improve on)
    nf4          QLoRA's 4-bit NormalFloat (`lmstack/model/nf4.py`)
    llm-int8     int8 weights and activations, outlier feature columns kept in float (LLM.int8())
    smoothquant  W8A8 after migrating activation outliers into the weights (`smoothquant.py`)
    gptq         error-compensating rounding from calibration inputs' Hessians (`gptq.py`)
    awq          activation-aware channel scaling and clipping, then rounding (`awq.py`)

`quantize_weights` is the engine shared with GGUF export: it picks the integers for every layer
a `grid_for(name)` function gives a grid, and leaves each such layer holding the dequantized
values (so calibration of the next block sees the quantized model). `quantize_model` then swaps
the layers for the packed ones of `lmstack/model/quantized.py` that run fast and save compactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from lmstack.errors import LmstackError
from lmstack.model.nf4 import quantize_linear_nf4
from lmstack.model.quantized import (
    Int4Linear,
    Int8Linear,
    QuantizedEmbedding,
    QuantizedLinear,
    pack_int4,
    quantized_layers,
)
from lmstack.model.transformer import Transformer
from lmstack.quant.awq import awq_block_scales
from lmstack.quant.calibration import BlockRunner
from lmstack.quant.gptq import gptq_quantize
from lmstack.quant.grids import (
    ErrorStats,
    Grid,
    QuantizedWeight,
    absmax_grid,
    granularity_group_size,
    minmax_grid,
    quantize_rtn,
    zeropoint_grid,
)
from lmstack.quant.settings import QuantSettings
from lmstack.quant.smoothquant import smooth_block

# AWQ's scale search measures output error on this many calibration tokens per layer.
AWQ_SAMPLE_TOKENS = 1024

GridFor = Callable[[str], "Grid | None"]


def body_grid(settings: QuantSettings) -> Grid:
    """The grid of the transformer blocks' linear layers for these settings."""
    if settings.method == "int8":
        size = granularity_group_size(settings.granularity, settings.group_size)
        return absmax_grid(8, size) if settings.scheme == "absmax" else zeropoint_grid(8, size)
    if settings.method in ("llm-int8", "smoothquant") or settings.bits == 8:
        return absmax_grid(8)  # int8 activations need one symmetric scale per row
    return minmax_grid(4, settings.group_size)


def lmstack_grids(settings: QuantSettings) -> GridFor:
    body = body_grid(settings)
    head = {"int8": absmax_grid(8), "int4": minmax_grid(4, settings.group_size), "float": None}[settings.head]
    return lambda name: head if name == "lm_head" else body


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@dataclass
class ErrorTally:
    """Weight reconstruction error summed over layers (overall and per layer kind)."""

    noise: dict[str, float] = field(default_factory=dict)
    signal: dict[str, float] = field(default_factory=dict)
    max_abs: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, original: torch.Tensor, dequantized: torch.Tensor) -> None:
        kind = name.rsplit(".", 1)[-1]
        diff = dequantized.float() - original.float()
        for key in (kind, "all"):
            self.noise[key] = self.noise.get(key, 0.0) + diff.pow(2).sum().item()
            self.signal[key] = self.signal.get(key, 0.0) + original.float().pow(2).sum().item()
            self.max_abs[key] = max(self.max_abs.get(key, 0.0), diff.abs().max().item())
            self.count[key] = self.count.get(key, 0) + diff.numel()

    def stats(self) -> dict[str, ErrorStats]:
        return {key: ErrorStats.from_sums(self.noise[key], self.signal[key], self.max_abs[key], self.count[key])
                for key in self.noise}


@torch.no_grad()
def quantize_weights(model: Transformer, settings: QuantSettings, grid_for: GridFor,
                     windows: torch.Tensor | None = None,
                     tally: ErrorTally | None = None) -> dict[str, tuple[QuantizedWeight, Grid]]:
    """Choose the integers of every linear layer `grid_for` names (in place, see the module doc)."""
    chosen: dict[str, tuple[QuantizedWeight, Grid]] = {}

    def settle(name: str, linear: nn.Linear, quantized: QuantizedWeight, grid: Grid) -> None:
        dequantized = quantized.dequantize().to(linear.weight.dtype)
        if tally is not None:
            tally.add(name, linear.weight, dequantized)
        linear.weight.copy_(dequantized)
        chosen[name] = (quantized, grid)

    if not settings.calibrated:
        for name, linear in linear_layers(model).items():
            if (grid := grid_for(name)) is not None:
                settle(name, linear, quantize_rtn(linear.weight, grid, search=_search(settings, grid)), grid)
        return chosen
    if windows is None:
        raise LmstackError(f"{settings.method} needs calibration text")
    runner = BlockRunner(model, windows)
    keep = AWQ_SAMPLE_TOKENS if settings.method == "awq" else 0
    for index, block, stats in runner.blocks(keep_sample=keep):
        prefix = f"model.layers.{index}."
        if settings.method == "awq":
            awq_block_scales(block, stats, grid_for, prefix)
        elif settings.method == "smoothquant":
            smooth_block(block, stats, settings.alpha)
        for name, linear in linear_layers(block).items():
            if (grid := grid_for(prefix + name)) is not None:
                settle(prefix + name, linear, _calibrated_rounding(linear.weight, stats[name], grid, settings), grid)
    if (grid := grid_for("lm_head")) is not None:
        settle("lm_head", model.lm_head, _calibrated_rounding(model.lm_head.weight, runner.head_inputs(), grid,
                                                             settings), grid)
    return chosen


def _search(settings: QuantSettings, grid: Grid) -> int:
    """Clipping search only where it is asked for and the grid is coarse (4-bit)."""
    return settings.search if grid.levels <= 32 and settings.method in ("int4", "awq", "gptq") else 0


def _calibrated_rounding(weight: torch.Tensor, inputs, grid: Grid, settings: QuantSettings) -> QuantizedWeight:
    if settings.method == "gptq":
        return gptq_quantize(weight, inputs.hessian, grid, damp=settings.damp, act_order=settings.act_order,
                             search=_search(settings, grid))
    return quantize_rtn(weight, grid, importance=inputs.mean_square, search=_search(settings, grid))


def packed_layer(quantized: QuantizedWeight, grid: Grid, bias: torch.Tensor | None,
                 settings: QuantSettings) -> QuantizedLinear:
    """The fast, compact layer for integers chosen on `grid`."""
    q, scale, offset = quantized
    if grid.levels <= 16:  # 4-bit: stored as 0..15 with a per-group minimum
        return Int4Linear(pack_int4(q - grid.qmin), scale, offset + grid.qmin * scale, bias)
    zero_points = None if grid.symmetric else torch.round(-offset / torch.where(scale == 0, 1.0, scale))
    activations = {"llm-int8": "int8-outliers", "smoothquant": "int8"}.get(settings.method, "none")
    return Int8Linear(q.to(torch.int8), scale, zero_points, bias, activations=activations,
                      outlier_threshold=settings.threshold)


@dataclass
class QuantReport:
    """What quantizing did: how many layers, their bytes, and the weights' reconstruction error."""

    method: str
    recipe: dict
    layers: int
    params: int
    dense_bytes: int  # the quantized layers' weights in float32
    quantized_bytes: int
    errors: dict[str, ErrorStats]  # "all" and per layer kind (q_proj, ..., lm_head)


def quantize_model(model: Transformer, settings: QuantSettings, windows: torch.Tensor | None = None) -> QuantReport:
    """Quantize `model` in place (float32 weights in, packed quantized layers out)."""
    tally = ErrorTally()
    if settings.method == "nf4":  # QLoRA's choice: every linear layer but the output head
        layers = {name: linear for name, linear in linear_layers(model).items() if name != "lm_head"}
        for name, linear in layers.items():
            nf4 = quantize_linear_nf4(linear, torch.float32)
            tally.add(name, linear.weight, nf4.dequantized_weight())
            model.set_submodule(name, nf4)
        params = sum(linear.weight.numel() for linear in layers.values())
        nf4_bytes = sum(layer.storage_bytes() for layer in quantized_layers(model).values())
        return QuantReport("nf4", settings.recipe(), len(layers), params, params * 4, nf4_bytes, tally.stats())
    chosen = quantize_weights(model, settings, lmstack_grids(settings), windows, tally)
    quantized_bytes = params = 0
    for name, (quantized, grid) in chosen.items():
        dense = model.get_submodule(name)
        layer_settings = settings if name != "lm_head" else settings.model_copy(update={"method": "int8"})
        layer = packed_layer(quantized, grid, dense.bias, layer_settings)
        model.set_submodule(name, layer)
        quantized_bytes += layer.storage_bytes()
        params += dense.weight.numel()
    if model.config.tie_word_embeddings and "lm_head" in chosen:
        model.model.embed_tokens = QuantizedEmbedding(model.lm_head, torch.float32)
    return QuantReport(settings.method, settings.recipe(), len(chosen), params, params * 4, quantized_bytes,
                       tally.stats())
