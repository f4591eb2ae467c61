"""NF4: the 4-bit NormalFloat data type of QLoRA (Dettmers et al., 2023), written from the paper.

Trained weights are roughly normal, so NF4 places its 16 code values at quantiles of N(0, 1):
each code is then used about equally often. A weight matrix is cut into blocks of 64 values; each
block is divided by its absolute maximum (absmax) so it lies in [-1, 1], and every value becomes the
index of its nearest code, two 4-bit indices per byte.

The fp32 absmax constants would cost 32/64 = 0.5 bit per weight. "Double quantization" shrinks
them: subtract their mean (they are all positive, so centring uses the 8-bit range well) and store
them as 8-bit integers with one fp32 scale per block of 256 constants, about 0.127 bit per weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.errors import LmstackError
from lmstack.model.quantized import QuantizedLinear

NF4_BLOCK_SIZE = 64
ABSMAX_BLOCK_SIZE = 256
# The paper's quantile range: the outermost quantile is taken at this probability instead of 1,
# where N(0, 1)'s quantile would be infinite.
_OUTER_PROBABILITY = 0.9677083


@lru_cache(maxsize=1)
def _nf4_code_values_cpu() -> torch.Tensor:
    # Asymmetric construction, so that 0 is represented exactly: 8 positive quantiles,
    # 7 negative ones, and 0 itself; then normalised to [-1, 1].
    positive = torch.special.ndtri(torch.linspace(_OUTER_PROBABILITY, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(_OUTER_PROBABILITY, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return (values / values.max()).to(torch.float32)


def nf4_code_values(device: torch.device | str | None = None) -> torch.Tensor:
    """The 16 NF4 code values in ascending order, from -1 to 1 (float32)."""
    return _nf4_code_values_cpu().to(device)


def _pad_to_multiple(flat: torch.Tensor, multiple: int) -> torch.Tensor:
    return F.pad(flat, (0, -flat.numel() % multiple))


def quantize_blocks(values: torch.Tensor, block_size: int = NF4_BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """First level: NF4 code indices (uint8, 0..15) and one fp32 absmax per block of `block_size`.

    The input is flattened and zero-padded to a whole number of blocks.
    """
    blocks = _pad_to_multiple(values.detach().float().flatten(), block_size).view(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    normalized = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1)
    codes = nf4_code_values(values.device)
    # The nearest code is found by comparing with the midpoints between neighbouring codes.
    midpoints = (codes[1:] + codes[:-1]) / 2
    indices = torch.bucketize(normalized, midpoints).to(torch.uint8)
    return indices.flatten(), absmax


def dequantize_blocks(indices: torch.Tensor, absmax: torch.Tensor, block_size: int = NF4_BLOCK_SIZE) -> torch.Tensor:
    """Inverse of `quantize_blocks`: flat fp32 values (padding included)."""
    codes = nf4_code_values(indices.device)
    return (codes[indices.long()].view(-1, block_size) * absmax.unsqueeze(1)).flatten()


class QuantizedAbsmax(NamedTuple):
    """Second level (double quantization): absmax ≈ values * scales[block] + mean."""

    values: torch.Tensor  # int8, one per first-level block (padded to a multiple of the block)
    scales: torch.Tensor  # fp32, one per block of ABSMAX_BLOCK_SIZE constants
    mean: torch.Tensor  # fp32 scalar


def quantize_absmax(absmax: torch.Tensor, block_size: int = ABSMAX_BLOCK_SIZE) -> QuantizedAbsmax:
    """Blockwise symmetric 8-bit quantization of the mean-centred absmax constants."""
    mean = absmax.mean()
    blocks = _pad_to_multiple(absmax - mean, block_size).view(-1, block_size)
    scales = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    values = torch.round(blocks / scales.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return QuantizedAbsmax(values.flatten(), scales, mean)


def dequantize_absmax(quantized: QuantizedAbsmax, num_blocks: int) -> torch.Tensor:
    """Inverse of `quantize_absmax`: the first `num_blocks` absmax constants (fp32)."""
    values = quantized.values.view(quantized.scales.numel(), -1).float() * quantized.scales.unsqueeze(1)
    return (values.flatten() + quantized.mean)[:num_blocks]


def pack_4bit(indices: torch.Tensor) -> torch.Tensor:
    """Two 4-bit indices per byte, the first of each pair in the high nibble."""
    pairs = indices.view(-1, 2)
    return (pairs[:, 0] << 4) | pairs[:, 1]


def unpack_4bit(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_4bit`: uint8 indices, twice as many as bytes."""
    return torch.stack([packed >> 4, packed & 0x0F], dim=1).flatten()


class _NF4MatMul(torch.autograd.Function):
    """x @ W.T where W is dequantized again in backward instead of being kept alive for it.

    Saving only the packed weight is what keeps a QLoRA step's memory close to 4 bits per weight.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: NF4Linear) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantized_weight())

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output @ ctx.layer.dequantized_weight(), None


class NF4Linear(QuantizedLinear):
    """A frozen linear layer whose weight is stored in NF4 and dequantized on the fly in forward.

    Computation happens in `compute_dtype` (float32 or bfloat16); the output has the input's dtype.
    """

    kind = "nf4"

    def __init__(
        self,
        packed: torch.Tensor,
        absmax: QuantizedAbsmax,
        bias: torch.Tensor | None,
        *,
        out_features: int,
        in_features: int,
        compute_dtype: torch.dtype,
    ) -> None:
        super().__init__(in_features, out_features, None)
        self.compute_dtype = compute_dtype
        self.register_buffer("packed_weight", packed)
        self.register_buffer("absmax_values", absmax.values)
        self.register_buffer("absmax_scales", absmax.scales)
        self.register_buffer("absmax_mean", absmax.mean)
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(compute_dtype), requires_grad=False)

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.out_features * self.in_features / NF4_BLOCK_SIZE)

    def dequantized_weight(self) -> torch.Tensor:
        """The [out_features, in_features] weight in `compute_dtype`."""
        absmax = dequantize_absmax(
            QuantizedAbsmax(self.absmax_values, self.absmax_scales, self.absmax_mean), self.num_blocks
        )
        flat = dequantize_blocks(unpack_4bit(self.packed_weight), absmax)
        numel = self.out_features * self.in_features
        return flat[:numel].view(self.out_features, self.in_features).to(self.compute_dtype)

    def spec(self) -> dict:
        return {"kind": self.kind, "in_features": self.in_features, "out_features": self.out_features}

    @classmethod
    def from_state(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> NF4Linear:
        absmax = QuantizedAbsmax(tensors["absmax_values"], tensors["absmax_scales"], tensors["absmax_mean"])
        bias = tensors.get("bias")
        return cls(tensors["packed_weight"], absmax, bias, out_features=spec["out_features"],
                   in_features=spec["in_features"], compute_dtype=torch.float32 if bias is None else bias.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _NF4MatMul.apply(x.to(self.compute_dtype), self)
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, compute_dtype={self.compute_dtype}"
        )


def quantize_linear_nf4(linear: nn.Linear, compute_dtype: torch.dtype | None = None) -> NF4Linear:
    """An NF4Linear holding `linear`'s weight in 4 bits (bias kept as is, in `compute_dtype`).

    `compute_dtype` defaults to the weight's dtype.
    """
    weight = linear.weight.detach()
    compute_dtype = compute_dtype or weight.dtype
    if not compute_dtype.is_floating_point:
        raise LmstackError(f"NF4 compute dtype must be a float type, got {compute_dtype}; use float32 or bfloat16")
    indices, absmax = quantize_blocks(weight)
    return NF4Linear(
        pack_4bit(indices),
        quantize_absmax(absmax),
        linear.bias,
        out_features=linear.out_features,
        in_features=linear.in_features,
        compute_dtype=compute_dtype,
    )


@dataclass
class NF4Report:
    """What quantizing a model's linear layers to NF4 did."""

    layers: int
    params: int
    dense_bytes: int
    nf4_bytes: int
    relative_error: float  # ||W - dequant(quant(W))|| / ||W|| over all quantized weights

    @property
    def saved_bytes(self) -> int:
        return self.dense_bytes - self.nf4_bytes

    @property
    def bytes_per_param(self) -> float:
        return self.nf4_bytes / self.params


def quantize_model_nf4(
    model: nn.Module, *, compute_dtype: torch.dtype | None = None, skip: tuple[str, ...] = ("lm_head",)
) -> NF4Report:
    """Replace every nn.Linear in `model` (in place) by an NF4Linear, except those named in `skip`.

    As in QLoRA, the output head stays in full precision by default.
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] not in skip
    ]
    if not targets:
        raise LmstackError("the model has no nn.Linear layers to quantize to NF4; pass a transformer model")
    params = dense_bytes = nf4_bytes = 0
    squared_error = squared_norm = 0.0
    for name, linear in targets:
        quantized = quantize_linear_nf4(linear, compute_dtype)
        weight = linear.weight.detach().float()
        squared_error += (weight - quantized.dequantized_weight().float()).pow(2).sum().item()
        squared_norm += weight.pow(2).sum().item()
        params += weight.numel()
        dense_bytes += weight.numel() * linear.weight.element_size()
        nf4_bytes += quantized.storage_bytes()
        model.set_submodule(name, quantized)
    return NF4Report(len(targets), params, dense_bytes, nf4_bytes, math.sqrt(squared_error / max(squared_norm, 1e-30)))
