"""Quantized weights: how they are stored, and the linear layers that compute with them fast.

The quantization stage (`lmstack/quant/`) decides the integer values (round-to-nearest, GPTQ,
AWQ, SmoothQuant...); this file holds what a quantized model is once made, so that `lmstack.load`
reads it back without importing a stage. Each layer is a drop-in replacement for `nn.Linear`
(same `in_features`/`out_features`, same place in the module tree), so PEFT adapters still
address `q_proj`, `up_proj`, ... by name.

Formats, with `w` the real weight, `q` the stored integers, `s` scales and `G` groups per row:

- `int8`: q int8 [N, K]; w = (q - z) * s with s (and optional zero points z) per row
  ([N, 1]), per group ([N, G]) or per tensor ([1, 1]). Activations stay in floating point, or
  are quantized to int8 per token (`activations: int8`, SmoothQuant's W8A8), or int8 except the
  outlier feature columns, which stay in floating point (`activations: int8-outliers`, LLM.int8()).
- `int4`: q in 0..15, two per byte [N, K/2] (column 2j in the low nibble of byte j, 2j+1 in
  the high one); w = q * s + m with s and m per group of `group_size` columns ([N, G]).
- `nf4`: QLoRA's NormalFloat (`lmstack/model/nf4.py`).

Decoding one token at a time reads every weight once per step, so its speed is the bytes read.
On the CPU, PyTorch has weight-only kernels that read int8 (`_weight_int8pack_mm`) and packed
int4 (`_weight_int4pack_mm_for_cpu`) directly; both are fast only with bfloat16 activations (the
float32 variants are 10-25x slower, measured), so a few rows are cast to bf16 for the kernel and
back. Many rows (a prompt, a perplexity window) are compute-bound: the weight is dequantized to
the activations' dtype and multiplied as usual, which is also exact in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.errors import LmstackError

# Up to this many rows (tokens x batch) go through the packed kernels; more are dequantized.
KERNEL_MAX_ROWS = 16
KERNEL_DTYPE = torch.bfloat16
CPU_ALIGNMENT = 64  # bytes: what the AVX-512 kernels load from
INT8_ACTIVATIONS = ("none", "int8", "int8-outliers")


class QuantizedLinear(nn.Module):
    """A frozen linear layer whose weight is stored quantized. Subclasses define the format."""

    kind: str = ""

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self) -> torch.Tensor:
        """The [out_features, in_features] weight the stored integers stand for."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """This layer's entry in config.json's `quantization.layers` (kind and format settings)."""
        return {"kind": self.kind}

    def storage_state(self) -> dict[str, torch.Tensor]:
        """The tensors saved for this layer, by their names under it, in their storage dtypes."""
        return {name: t for name, t in self.state_dict().items()}

    def storage_bytes(self) -> int:
        """Bytes stored for the weight (integers, scales and offsets; the bias is not counted)."""
        return sum(t.numel() * t.element_size() for name, t in self.storage_state().items() if name != "bias")

    def _prepare_kernel(self) -> None:
        """Derive what the fast kernels read from the stored tensors (memory only, not saved)."""

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._prepare_kernel()  # after .to(device/dtype): the kernels' copies follow
        return self

    def _with_bias(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.spec().items() if k != "kind")
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"{settings}"


def _rows(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _use_kernel(x: torch.Tensor) -> bool:
    """The packed kernels have no backward: training (LoRA on top) takes the dequantized path."""
    return x.device.type == "cpu" and _rows(x) <= KERNEL_MAX_ROWS and not _needs_grad(x)


def _group_view(values: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, K] as [N, G, K/G] so per-group scales [N|1, G|1] broadcast over each group."""
    return values.view(values.shape[0], groups, -1)


class Int8Linear(QuantizedLinear):
    """int8 weights with per-tensor, per-row or per-group scales; optional int8 activations."""

    kind = "int8"

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, *, activations: str = "none", outlier_threshold: float = 6.0):
        out_features, in_features = qweight.shape
        super().__init__(in_features, out_features, bias)
        if qweight.dtype != torch.int8:
            raise LmstackError(f"int8 weights must be stored as int8, got {qweight.dtype}")
        groups = scales.shape[-1]
        if scales.dim() != 2 or scales.shape[0] not in (1, out_features) or in_features % groups:
            raise LmstackError(f"int8 scales of shape {list(scales.shape)} do not fit a weight of "
                               f"{list(qweight.shape)}; expected [1 or {out_features}, groups dividing {in_features}]")
        if activations not in INT8_ACTIVATIONS:
            raise LmstackError(f"unknown int8 activations '{activations}'; use one of {', '.join(INT8_ACTIVATIONS)}")
        if activations != "none" and (zero_points is not None or groups != 1):
            raise LmstackError("int8 activations need symmetric weights with one scale per row")
        self.activations = activations
        self.outlier_threshold = float(outlier_threshold)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales.float())
        self.register_buffer("zero_points", None if zero_points is None else zero_points.to(torch.int8))
        self._prepare_kernel()

    @property
    def groups(self) -> int:
        return self.scales.shape[-1]

    def spec(self) -> dict[str, Any]:
        spec = {"kind": self.kind, "groups": self.groups, "per_tensor": self.scales.shape[0] == 1,
                "zero_point": self.zero_points is not None, "activations": self.activations}
        return spec | ({"outlier_threshold": self.outlier_threshold} if self.activations == "int8-outliers" else {})

    def dequantized_weight(self) -> torch.Tensor:
        q = _group_view(self.qweight, self.groups).to(self.scales.dtype)
        if self.zero_points is not None:
            q = q - self.zero_points.to(q.dtype).unsqueeze(-1)
        return (q * self.scales.unsqueeze(-1)).view(self.out_features, self.in_features)

    def rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Dequantized rows `ids` of the weight (an embedding lookup from the same storage)."""
        q = self.qweight[ids].to(dtype).unflatten(-1, (self.groups, -1))
        scales = self.scales[ids if self.scales.shape[0] > 1 else 0].to(dtype)
        if self.zero_points is not None:
            q = q - self.zero_points[ids if self.zero_points.shape[0] > 1 else 0].to(dtype).unsqueeze(-1)
        return (q * scales.unsqueeze(-1)).flatten(-2)

    def _prepare_kernel(self) -> None:
        """Per-row scales in the kernel's dtype, kept beside the stored ones (they follow .to())."""
        self._kernel_scales = None
        if self.qweight.device.type == "cpu" and self.qweight.data_ptr() % CPU_ALIGNMENT:
            # memory-mapped from safetensors at any offset: the kernels crash on unaligned
            # weights (torch 2.13, 8+ rows), so take an aligned copy
            self.qweight = self.qweight.clone()
        if self.groups == 1 and self.qweight.device.type == "cpu":
            self._kernel_scales = self.scales.expand(self.out_features, 1).flatten().to(KERNEL_DTYPE).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations != "none":
            return self._with_bias(self._int8_activations(x))
        if self._kernel_scales is not None and _use_kernel(x):
            flat = x.reshape(-1, self.in_features).to(KERNEL_DTYPE)
            out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self._kernel_scales).to(x.dtype)
            if self.zero_points is not None:  # (q - z) s: subtract z s times the sum of the inputs
                out = out - x.reshape(-1, self.in_features).sum(-1, keepdim=True) * (self.scales.flatten()
                                                                                     * self.zero_points.flatten())
            return self._with_bias(out.view(*x.shape[:-1], self.out_features))
        return self._with_bias(F.linear(x, self.dequantized_weight().to(x.dtype)))

    def _int8_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W8A8: each token's activations quantized to int8 (absmax), an int8 x int8 matmul."""
        flat = x.reshape(-1, self.in_features).float()
        outliers = None
        if self.activations == "int8-outliers":
            # LLM.int8(): feature columns holding any value above the threshold stay in float.
            outliers = (flat.abs() > self.outlier_threshold).any(dim=0)
            regular = flat.masked_fill(outliers, 0.0)
        else:
            regular = flat
        scale = regular.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / 127
        q = torch.round(regular / scale).clamp(-127, 127)
        if _needs_grad(x):  # rounding passes gradients straight through (training on top)
            q = regular / scale + (q - regular / scale).detach()
        if x.device.type == "cpu" and not _needs_grad(x):
            out = torch.ops.aten._int_mm(q.to(torch.int8), self.qweight.t()).float()
        else:  # the same products in float (exact for these magnitudes)
            out = q @ self.qweight.t().float()
        out = out * scale * self.scales.flatten().float()
        if outliers is not None and bool(outliers.any()):
            weight_columns = self.qweight[:, outliers].float() * self.scales.float()
            out = out + flat[:, outliers] @ weight_columns.t()
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def storage_state(self) -> dict[str, torch.Tensor]:
        state = {"qweight": self.qweight, "scales": self.scales.float()}
        if self.zero_points is not None:
            state["zero_points"] = self.zero_points
        return state | ({} if self.bias is None else {"bias": self.bias})

    @classmethod
    def from_state(cls, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "Int8Linear":
        return cls(tensors["qweight"], tensors["scales"], tensors.get("zero_points"), tensors.get("bias"),
                   activations=spec.get("activations", "none"),
                   outlier_threshold=spec.get("outlier_threshold", 6.0))


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] integers 0..15 as [N, K/2] bytes: column 2j in the low nibble, 2j+1 in the high."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: [N, K/2] bytes as [N, K] uint8 values 0..15."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).flatten(-2)


class Int4Linear(QuantizedLinear):
    """4-bit weights in groups of `group_size` columns, each with its own scale and offset."""

    kind = "int4"

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                 bias: torch.Tensor | None = None):
        out_features, in_features = qweight.shape[0], qweight.shape[1] * 2
        super().__init__(in_features, out_features, bias)
        if qweight.dtype != torch.uint8 or scales.shape != mins.shape or scales.shape[0] != out_features \
                or in_features % scales.shape[1]:
            raise LmstackError(f"int4 tensors do not fit together: packed {list(qweight.shape)} {qweight.dtype}, "
                               f"scales {list(scales.shape)}, mins {list(mins.shape)}")
        self.register_buffer("qweight", qweight)
        # fp16, as GGUF's blocks: a scale and an offset per 32 weights cost 1 bit per weight
        self.register_buffer("scales", scales.half())
        self.register_buffer("mins", mins.half())
        self._prepare_kernel()

    @property
    def group_size(self) -> int:
        return self.in_features // self.scales.shape[1]

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "group_size": self.group_size}

    def _dequantize(self, packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                    dtype: torch.dtype) -> torch.Tensor:
        q = unpack_int4(packed).to(dtype).unflatten(-1, (scales.shape[-1], -1))
        return (q * scales.to(dtype).unsqueeze(-1) + mins.to(dtype).unsqueeze(-1)).flatten(-2)

    def dequantized_weight(self) -> torch.Tensor:
        return self._dequantize(self.qweight, self.scales, self.mins, torch.float32)

    def rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self._dequantize(self.qweight[ids], self.scales[ids], self.mins[ids], dtype)

    def _prepare_kernel(self) -> None:
        """The kernel's own packed layout (its tiles need rows in multiples of 16): memory only."""
        self._kernel = None
        if self.qweight.device.type == "cpu" and self.out_features % 16 == 0 and self.in_features % 64 == 0:
            q = unpack_int4(self.qweight).to(torch.int32)
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            # The kernel computes (q - 8) * scale + zero: zero is the value at q = 8.
            zeros = self.mins.float() + 8 * self.scales.float()
            scales_zeros = torch.stack([self.scales.float(), zeros], dim=-1).transpose(0, 1)
            self._kernel = (packed, scales_zeros.to(KERNEL_DTYPE).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is not None and _use_kernel(x):
            packed, scales_zeros = self._kernel
            flat = x.reshape(-1, self.in_features).to(KERNEL_DTYPE)
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, self.group_size, scales_zeros)
            return self._with_bias(out.to(x.dtype).view(*x.shape[:-1], self.out_features))
        weight = self._dequantize(self.qweight, self.scales, self.mins, x.dtype)
        return self._with_bias(F.linear(x, weight))

    def storage_state(self) -> dict[str, torch.Tensor]:
        state = {"qweight": self.qweight, "scales": self.scales.half(), "mins": self.mins.half()}
        return state | ({} if self.bias is None else {"bias": self.bias})

    @classmethod
    def from_state(cls, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "Int4Linear":
        return cls(tensors["qweight"], tensors["scales"], tensors["mins"], tensors.get("bias"))


class QuantizedEmbedding(nn.Module):
    """The input embedding of a model whose output head is quantized and tied to it: a lookup
    dequantizes the rows it needs from the head's storage, so the matrix is stored once."""

    def __init__(self, head: Int8Linear | Int4Linear, dtype: torch.dtype):
        super().__init__()
        self._head = [head]  # a plain list: the head is registered (and saved) once, as lm_head
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.register_buffer("dtype_marker", torch.empty(0, dtype=dtype), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._head[0].rows(ids, self.dtype_marker.dtype)


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}


def quantized_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """What a quantized model saves: its state dict with each quantized layer's tensors in their
    storage dtypes, and the `quantization.layers` section of config.json that describes them."""
    layers = quantized_layers(model)
    state = {name: t for name, t in model.state_dict().items()
             if not any(name.startswith(f"{layer}.") for layer in layers)}
    for layer_name, layer in layers.items():
        state |= {f"{layer_name}.{key}": t for key, t in layer.storage_state().items()}
    return state, {name: layer.spec() for name, layer in layers.items()}
