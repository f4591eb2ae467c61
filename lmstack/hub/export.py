"""Write a loaded model out in the Hugging Face layout, any adapters folded in, and record it.

A quantized model is written quantized (its layout: `lmstack/model/quantized.py`)."""

from __future__ import annotations

from pathlib import Path

import torch

from lmstack import registry
from lmstack.device import DTYPES
from lmstack.errors import LmstackError
from lmstack.home import check_output
from lmstack.hub.load import ModelBundle
from lmstack.model import hf_io
from lmstack.model.quantized import quantized_state
from lmstack.peft import merged_model

EXPORT_FORMATS = ("hf",)
STORAGE_DTYPES = ("fp32", "bf16", "fp16")


def check_export(path: str | Path, format: str, dtype: str, overwrite: bool) -> Path:
    """Validate an export's settings and its output folder (before any model is loaded)."""
    if format not in EXPORT_FORMATS:
        raise LmstackError(f"unknown export format '{format}'; supported: {', '.join(EXPORT_FORMATS)}")
    if dtype not in STORAGE_DTYPES:
        raise LmstackError(f"unknown export dtype '{dtype}'; use one of {', '.join(STORAGE_DTYPES)}")
    return check_output(path, overwrite=overwrite)


def export_model(bundle: ModelBundle, path: str | Path, format: str = "hf", dtype: str = "fp32",
                 overwrite: bool = False) -> Path:
    """Write `bundle` as a model directory transformers loads as is; recorded as an export of it."""
    out = check_export(path, format, dtype, overwrite)
    torch_dtype: torch.dtype = DTYPES[dtype]
    # adapters folded in; a quantized model stays quantized (layers an adapter was merged into
    # become float)
    state, layers = quantized_state(merged_model(bundle.model))
    quantization = {**(hf_io.read_quantization(bundle.path) or {}), "layers": layers} if layers else None
    hf_io.write_model_dir(out, bundle.config, state, bundle.tokenizer, bundle.generation_config, torch_dtype,
                          quantization=quantization)
    registry.record("model", out, name=out.name, operation="export", parents=[bundle.lineage_id()],
                    recipe={"format": format, "dtype": dtype})
    return out
