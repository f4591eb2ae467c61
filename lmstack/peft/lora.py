"""LoRA (Hu et al., 2021), rsLoRA (Kalajdzievski, 2023) and DoRA (Liu et al., 2024) for linear layers.

LoRA freezes a pretrained weight W and learns a low-rank update: y = x W^T + s · x A^T B^T, with
A: [r, in], B: [out, r], r small, and s = alpha / r (rsLoRA: alpha / sqrt(r), which keeps the
update's size stable as r grows). B starts at zero, so training starts from the base model.

DoRA splits the updated weight into a direction and a per-output-row magnitude m:
W' = m · (W + s·BA) / ||W + s·BA||, with the row norm treated as a constant in backward.

Module and parameter names (`base_layer`, `lora_A`, `lora_B`, `lora_magnitude_vector`) follow the
`peft` library so saved adapters are interchangeable with it.
"""

from __future__ import annotations

import copy

import math
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.errors import LmstackError
from lmstack.model.quantized import QuantizedLinear

ALL_LINEAR = "all-linear"
# Layer types LoRA can wrap: plain linear layers and quantized ones (NF4 for QLoRA, int8, int4).
LINEAR_TYPES = (nn.Linear, QuantizedLinear)


@dataclass
class LoraConfig:
    """Which layers get adapters and how big they are.

    target_modules: module-name suffixes (`q_proj`, `layers.0.mlp.up_proj`, full paths) or
    "all-linear" for every linear layer except the output head `lm_head`.
    init_lora_weights: True starts B at zero (the adapter is a no-op); False draws B at random
    like A, which is only useful for tests.
    """

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: list[str] | Literal["all-linear"] = ALL_LINEAR
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool = True

    def __post_init__(self) -> None:
        if self.r < 1:
            raise LmstackError(f"LoRA rank r must be a positive integer, got {self.r}")
        if self.alpha <= 0:
            raise LmstackError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise LmstackError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, str) and self.target_modules != ALL_LINEAR:
            raise LmstackError(
                f"target_modules must be a list of module names or 'all-linear', got {self.target_modules!r}"
            )
        if not self.target_modules:
            raise LmstackError("target_modules is empty; name modules such as ['q_proj', 'v_proj'] or use 'all-linear'")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _dense_weight(layer: nn.Module) -> torch.Tensor:
    """The [out, in] weight of a linear or quantized layer, dequantized when needed."""
    return layer.dequantized_weight() if isinstance(layer, QuantizedLinear) else layer.weight


class LoraLinear(nn.Module):
    """A frozen linear layer (`base_layer`) plus a trainable low-rank update (and DoRA magnitude)."""

    def __init__(self, base_layer: nn.Module, config: LoraConfig) -> None:
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.r = config.r
        self.scaling = config.scaling
        self.use_dora = config.use_dora
        weight = _dense_weight(base_layer).detach()
        # Adapters live in float32 whatever the base dtype: their updates are small and would
        # be lost to bfloat16 rounding.
        factory = {"device": weight.device, "dtype": torch.float32}
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base_layer.in_features, config.r, bias=False, **factory)
        self.lora_B = nn.Linear(config.r, base_layer.out_features, bias=False, **factory)
        # The LoRA paper's start: A like a default nn.Linear (Kaiming-uniform), B zero.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        if config.init_lora_weights:
            nn.init.zeros_(self.lora_B.weight)
        else:
            nn.init.kaiming_uniform_(self.lora_B.weight, a=math.sqrt(5))
        if self.use_dora:
            # m starts at the row norms of the starting weight, so DoRA too begins as the base model.
            self.lora_magnitude_vector = nn.Parameter(self._updated_weight_norm(weight.float()))

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta_weight(self) -> torch.Tensor:
        """s · B A, the [out, in] LoRA update in float32."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def _updated_weight_norm(self, weight: torch.Tensor) -> torch.Tensor:
        # DoRA section 4.3: the norm is a constant for the gradient, which saves memory.
        with torch.no_grad():
            return torch.linalg.vector_norm(weight + self.delta_weight(), dim=1)

    def _dora_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """m / ||W + sBA||, one factor per output feature."""
        return self.lora_magnitude_vector / self._updated_weight_norm(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base_out = self.base_layer(x)
        x_lora = self.lora_dropout(x.to(self.lora_A.weight.dtype))
        update = self.lora_B(self.lora_A(x_lora)) * self.scaling
        if self.use_dora:
            # m·(W + sBA)x / ||W + sBA|| written as a correction on top of the base output.
            weight = _dense_weight(self.base_layer).to(x_lora.dtype)
            dora_scale = self._dora_scale(weight)
            update = (dora_scale - 1) * F.linear(x_lora, weight) + dora_scale * update
        return base_out + update.to(base_out.dtype)

    def merged_linear(self) -> nn.Linear:
        """A plain nn.Linear computing the same function (DoRA included), frozen like the base."""
        weight = _dense_weight(self.base_layer).detach()
        merged = weight.float() + self.delta_weight().detach()
        if self.use_dora:
            merged = merged * self._dora_scale(weight.float()).detach().unsqueeze(1)
        bias = self.base_layer.bias
        linear = nn.Linear(
            self.in_features, self.out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            linear.weight.copy_(merged)
            if bias is not None:
                linear.bias.copy_(bias)
        return linear.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, use_dora={self.use_dora}"


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    """(module path, layer) for every LoRA-wrapped layer in `model`."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield name, module


def _is_target(name: str, targets: list[str] | str) -> bool:
    if targets == ALL_LINEAR:
        return name.rsplit(".", 1)[-1] != "lm_head"
    return any(name == target or name.endswith("." + target) for target in targets)


def apply_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Wrap the target linear layers of `model` in LoraLinear (in place) and freeze everything else.

    Works on any nn.Module whose linear layers are named like Hugging Face's (`q_proj`, ...).
    Returns `model`; `count_parameters(model)` tells how many parameters are now trainable.
    """
    if any(True for _ in lora_layers(model)):
        raise LmstackError("the model already has LoRA adapters; merge them with merge_lora(model) first")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)]
    targets = [(name, m) for name, m in linears if _is_target(name, config.target_modules)]
    if not targets:
        available = sorted({name.rsplit(".", 1)[-1] for name, _ in linears})
        raise LmstackError(
            f"no linear layer matches target_modules={config.target_modules}; "
            f"available names: {', '.join(available) or 'none'}"
        )
    model.requires_grad_(False)
    for name, linear in targets:
        model.set_submodule(name, LoraLinear(linear, config))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (exactly, DoRA included), leaving plain nn.Linear layers.

    A quantized (e.g. NF4) base is dequantized first, so the merged layer is full precision in its compute dtype.
    """
    layers = list(lora_layers(model))
    if not layers:
        raise LmstackError("the model has no LoRA adapters to merge; apply_lora or load_adapter first")
    for name, layer in layers:
        model.set_submodule(name, layer.merged_linear())
    return model


def merged_model(model: nn.Module) -> nn.Module:
    """The model with any adapters folded in, on a copy (the model keeps them); itself if it has none."""
    if next(lora_layers(model), None) is None:
        return model
    return merge_lora(copy.deepcopy(model))


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights under transformers' names, with any adapters folded in on a copy (the model keeps them)."""
    return merged_model(model).state_dict()


@dataclass
class ParamCount:
    trainable: int
    total: int

    @property
    def percent_trainable(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def count_parameters(model: nn.Module) -> ParamCount:
    """Trainable and total parameters; a quantized weight counts as its out×in (frozen) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    quantized = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantizedLinear))
    total = sum(p.numel() for p in model.parameters()) + quantized
    return ParamCount(trainable, total)
