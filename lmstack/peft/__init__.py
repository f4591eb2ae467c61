"""Parameter-efficient fine-tuning: LoRA, rsLoRA, DoRA, NF4 and QLoRA, with peft-compatible adapters."""

from lmstack.peft.adapter_io import load_adapter, read_lora_factors, save_adapter
from lmstack.peft.lora import (
    LoraConfig,
    LoraLinear,
    ParamCount,
    apply_lora,
    count_parameters,
    lora_layers,
    merge_lora,
    merged_model,
    merged_state_dict,
)
from lmstack.model.nf4 import NF4Linear, NF4Report, nf4_code_values, quantize_linear_nf4, quantize_model_nf4
from lmstack.peft.qlora import prepare_qlora

__all__ = [
    "LoraConfig",
    "LoraLinear",
    "NF4Linear",
    "NF4Report",
    "ParamCount",
    "apply_lora",
    "count_parameters",
    "load_adapter",
    "lora_layers",
    "merge_lora",
    "merged_model",
    "merged_state_dict",
    "nf4_code_values",
    "prepare_qlora",
    "quantize_linear_nf4",
    "quantize_model_nf4",
    "read_lora_factors",
    "save_adapter",
]
