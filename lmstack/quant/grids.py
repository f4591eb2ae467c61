"""Rounding weights onto a grid of integers: the course's absmax and zero-point quantization.

A grid says which integers a weight may become (`qmin..qmax`) and how they read back:
`w ≈ q * scale + offset`, with one scale (and offset) per group of consecutive inputs of a row.

- absmax (symmetric): scale = max|w| / qmax, offset 0. Zero stays exactly zero; half of an
  asymmetric range goes unused when the weights lean to one side.
- zero-point (asymmetric): scale = (max - min) / (qmax - qmin), and the offset puts `min` on
  `qmin`; every level is used, at the price of storing the offset.

Granularity is the group: the whole tensor (one scale, cheapest, one outlier spoils every
weight), each output row ("channel"), or groups of g inputs within a row (GPTQ/AWQ's g=128, GGUF's
blocks of 32). GGUF's own formats (Q8_0, Q4_0, ...) are grids too, with llama.cpp's choices of
scale and rounding so that round-to-nearest reproduces its reference quantizer byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from lmstack.errors import LmstackError

GRANULARITIES = ("tensor", "channel", "group")


@dataclass(frozen=True)
class Grid:
    """Integers qmin..qmax per weight; w = q * scale + offset per group of `group_size` inputs."""

    qmin: int
    qmax: int
    symmetric: bool
    group_size: int | None = None  # None: one group per row; 0: the whole tensor
    scale_dtype: torch.dtype = torch.float32  # what the scale (and offset) is stored as
    # llama.cpp's Q4_0/Q5_0: the scale is the signed weight of largest magnitude / qmin, so that
    # weight lands exactly on qmin and the other end of the range is spent where the weights are.
    signed_max: bool = False
    half_away: bool = True  # round .5 away from zero (llama.cpp's roundf); else towards +inf
    # zero-point quantization proper: the offset is -z * scale for an integer z, so 0.0 is exact
    # (else a float offset, the group's minimum, as GGUF's Q4_1)
    integer_zero: bool = False
    # GGUF's K formats: the group scales (and offsets) are themselves stored as `scale_bits`-bit
    # integers times one fp16 scale per `super_block` inputs (see `second_level`)
    super_block: int = 0
    scale_bits: int = 0

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1

    def with_group_size(self, group_size: int | None) -> Grid:
        return replace(self, group_size=group_size)


def absmax_grid(bits: int = 8, group_size: int | None = None) -> Grid:
    """Symmetric: -(2^(b-1) - 1) .. 2^(b-1) - 1, so that +w and -w round to +q and -q."""
    top = 2 ** (bits - 1) - 1
    return Grid(-top, top, symmetric=True, group_size=group_size)


def zeropoint_grid(bits: int = 8, group_size: int | None = None, scale_dtype: torch.dtype = torch.float32) -> Grid:
    """Asymmetric: -2^(b-1) .. 2^(b-1) - 1 for int8 (stored signed), 0 .. 2^b - 1 below 8 bits."""
    low = -(2 ** (bits - 1)) if bits == 8 else 0
    return Grid(low, low + 2**bits - 1, symmetric=False, group_size=group_size, scale_dtype=scale_dtype,
                integer_zero=True)


def minmax_grid(bits: int = 4, group_size: int | None = 32) -> Grid:
    """0 .. 2^b - 1 from each group's minimum to its maximum, fp16 scale and minimum (as Q4_1)."""
    return Grid(0, 2**bits - 1, symmetric=False, group_size=group_size, scale_dtype=torch.float16)


def granularity_group_size(granularity: str, group_size: int) -> int | None:
    """The `group_size` field a granularity name stands for."""
    if granularity not in GRANULARITIES:
        raise LmstackError(f"unknown granularity '{granularity}'; use one of {', '.join(GRANULARITIES)}")
    return {"tensor": 0, "channel": None, "group": group_size}[granularity]


class QuantizedWeight(NamedTuple):
    """Integer codes [N, K] and, per group, scale and offset [N | 1, G]: w ≈ q * scale + offset."""

    q: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        n, k = self.q.shape
        groups = self.scale.shape[-1]
        q = self.q.float().view(n, groups, k // groups)
        return (q * self.scale.float().unsqueeze(-1) + self.offset.float().unsqueeze(-1)).view(n, k)


def grouped(weight: torch.Tensor, grid: Grid) -> torch.Tensor:
    """[N, K] as [rows, G, g]: the groups that share a scale (rows is 1 for a per-tensor grid)."""
    n, k = weight.shape
    if grid.group_size == 0:
        return weight.reshape(1, 1, n * k)
    size = grid.group_size or k
    if k % size:
        raise LmstackError(f"group size {size} does not divide the layer's {k} inputs; choose a divisor of {k}")
    return weight.reshape(n, k // size, size)


def fit(grid: Grid, w: torch.Tensor, shrink: float = 1.0, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset of each group (the last dimension of `w`), before rounding to storage.

    `shrink` < 1 clips the range: the largest weights saturate, every other one gets a finer step.
    `flip` (signed-max grids): put the largest weight on qmax instead of qmin.
    """
    if grid.symmetric:
        if grid.signed_max:
            index = w.abs().argmax(dim=-1, keepdim=True)
            scale = (torch.gather(w, -1, index).squeeze(-1) * shrink) / (grid.qmax if flip else grid.qmin)
        else:
            scale = w.abs().amax(dim=-1) * shrink / grid.qmax
        offset = torch.zeros_like(scale)
    elif grid.integer_zero:  # the range must hold 0 for it to land on an integer
        low, high = w.amin(dim=-1).clamp(max=0) * shrink, w.amax(dim=-1).clamp(min=0) * shrink
        scale = (high - low) / (grid.qmax - grid.qmin)
        zero = torch.round(grid.qmin - low / torch.where(scale == 0, torch.ones_like(scale), scale))
        offset = -zero.clamp(grid.qmin, grid.qmax) * scale
    else:
        low, high = w.amin(dim=-1) * shrink, w.amax(dim=-1) * shrink
        if grid.super_block:  # K formats store the offset as -m with m >= 0
            low = low.clamp(max=0)
        scale = (high - low) / (grid.qmax - grid.qmin)
        offset = low - grid.qmin * scale
    return scale, offset


def second_level(grid: Grid, scale: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K formats: group scales and offsets [rows, G] as stored, i.e. small integers times one
    fp16 scale (and one fp16 `dmin` for offsets) per super block. Other grids: fp16/fp32 rounding."""
    if not grid.super_block:
        return stored(grid, scale), stored(grid, offset)
    rows, groups = scale.shape
    per_super = grid.super_block // grid.group_size
    s = scale.reshape(rows, groups // per_super, per_super)
    if grid.symmetric:  # Q6_K: signed int8 scales, the largest in magnitude maps to -128
        d = _fp16(torch.gather(s, -1, s.abs().argmax(dim=-1, keepdim=True)) / -128)
        ints = torch.round(s / nonzero_or_one(d)).clamp(-128, 127)
        return (ints * d).reshape(rows, groups), torch.zeros_like(scale)
    top = 2**grid.scale_bits - 1
    low = (-offset).clamp_min(0).reshape(rows, groups // per_super, per_super)
    d, dmin = _fp16(s.amax(dim=-1, keepdim=True) / top), _fp16(low.amax(dim=-1, keepdim=True) / top)
    ints = torch.round(s / nonzero_or_one(d)).clamp(0, top)
    mins = torch.round(low / nonzero_or_one(dmin)).clamp(0, top)
    return (ints * d).reshape(rows, groups), (-mins * dmin).reshape(rows, groups)


def _fp16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).float()


def nonzero_or_one(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t == 0, torch.ones_like(t), t)


def round_codes(grid: Grid, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The integer nearest each weight on the grid (scale/offset broadcast over w's last dim)."""
    inverse = torch.where(scale == 0, torch.zeros_like(scale), 1 / scale)
    x = (w - offset.unsqueeze(-1)) * inverse.unsqueeze(-1)
    if grid.half_away:  # exact, as llama.cpp's roundf: floor(a) + (1 if the fraction is >= .5)
        a = x.abs()
        whole = torch.floor(a)
        x = torch.sign(x) * (whole + torch.floor(2 * (a - whole)))
    else:  # shifted to start at 0 first, in one addition, as llama.cpp's reference does
        x = torch.floor(x + (0.5 - grid.qmin)) + grid.qmin
    return x.clamp(grid.qmin, grid.qmax)


def stored(grid: Grid, t: torch.Tensor) -> torch.Tensor:
    return t.to(grid.scale_dtype).float()


def quantize_rtn(weight: torch.Tensor, grid: Grid, importance: torch.Tensor | None = None,
                 search: int = 0) -> QuantizedWeight:
    """Round-to-nearest onto `grid`, group by group.

    With `search` > 0, each group also tries that many narrower ranges (clipping) and keeps the
    one with the least squared error, weighted by `importance` [K] (how much each input matters:
    the mean squared activation, from calibration) when given.
    """
    w = grouped(weight.float(), grid)
    scale, offset = fit_groups(grid, w, importance, search)
    final_scale, final_offset = second_level(grid, scale, offset)
    # Plain rounding divides by the unrounded scale, as llama.cpp's reference quantizers do
    # (byte-identical output); a searched or two-level scale is used as stored.
    plain = not search and not grid.super_block
    q = round_codes(grid, w, scale, offset) if plain else round_codes(grid, w, final_scale, final_offset)
    n, k = weight.shape
    return QuantizedWeight(q.reshape(n, k).to(torch.int16), final_scale, final_offset)


def fit_groups(grid: Grid, w: torch.Tensor, importance: torch.Tensor | None = None,
               search: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset per group of `w` [rows, G, g]: the plain fit, or with `search` the best of
    that many clipped ranges (both signs for signed-max grids) by importance-weighted error."""
    scale, offset = fit(grid, w)
    if not search:
        return scale, offset
    weights = None if importance is None else importance.float().expand(w.numel() // importance.numel(), -1).reshape(w.shape)
    best = _squared_error(grid, w, stored(grid, scale), stored(grid, offset), weights)
    shrinks = torch.linspace(1.0, 0.5, search + 1).tolist()
    candidates = [(shrink, False) for shrink in shrinks[1:]]
    if grid.signed_max:
        candidates += [(shrink, True) for shrink in shrinks]
    for shrink, flip in candidates:
        s, o = fit(grid, w, shrink, flip)
        error = _squared_error(grid, w, stored(grid, s), stored(grid, o), weights)
        better = error < best
        scale, offset, best = torch.where(better, s, scale), torch.where(better, o, offset), torch.minimum(error, best)
    return scale, offset


def _squared_error(grid: Grid, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                   weights: torch.Tensor | None) -> torch.Tensor:
    q = round_codes(grid, w, scale, offset)
    error = (q * scale.unsqueeze(-1) + offset.unsqueeze(-1) - w).pow(2)
    return (error if weights is None else error * weights).sum(dim=-1)


@dataclass
class ErrorStats:
    """How far the dequantized weights are from the originals."""

    mse: float
    max_abs: float
    relative: float  # ||W - Ŵ|| / ||W||
    sqnr_db: float  # signal-to-quantization-noise ratio, 10 log10(||W||² / ||W - Ŵ||²)

    @classmethod
    def from_sums(cls, noise: float, signal: float, max_abs: float, count: int) -> ErrorStats:
        """From the summed squared error and squared weights over `count` weights."""
        return cls(mse=noise / max(count, 1), max_abs=max_abs,
                   relative=math.sqrt(noise / signal) if signal else 0.0,
                   sqnr_db=10 * math.log10(signal / noise) if noise and signal else math.inf)


def error_stats(original: torch.Tensor, dequantized: torch.Tensor) -> ErrorStats:
    diff = (dequantized.float() - original.float()).flatten()
    return ErrorStats.from_sums(noise=diff.pow(2).sum().item(), signal=original.float().pow(2).sum().item(),
                                max_abs=diff.abs().max().item() if diff.numel() else 0.0, count=diff.numel())
