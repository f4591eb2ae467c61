"""QLoRA (Dettmers et al., 2023): LoRA adapters trained on top of a frozen NF4-quantized base.

The base weights take about 0.52 byte per parameter instead of 2 or 4; gradients flow through the
dequantized base into the adapters, which stay in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from lmstack.peft.lora import LoraConfig, apply_lora
from lmstack.model.nf4 import NF4Report, quantize_model_nf4


def prepare_qlora(model: nn.Module, config: LoraConfig, *, compute_dtype: torch.dtype | None = None) -> NF4Report:
    """Quantize every linear layer except `lm_head` to NF4, then add LoRA adapters, in place.

    Returns the quantization report (memory saved, reconstruction error).
    """
    report = quantize_model_nf4(model, compute_dtype=compute_dtype)
    apply_lora(model, config)
    return report
