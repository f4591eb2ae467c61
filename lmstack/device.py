"""Which device and dtype to run on: automatic (cuda, then cpu) unless the user says otherwise."""

from __future__ import annotations

import os

import torch

from lmstack.errors import LmstackError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def resolve_device(name: str | None = None) -> torch.device:
    """cuda when there is a GPU, else cpu; under torchrun each process takes GPU number LOCAL_RANK."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LmstackError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LmstackError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware is built for it, fp32 on the CPU (exact, and the parity reference)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise LmstackError(f"unknown dtype '{name}'; use one of {', '.join(DTYPES)}")
    return DTYPES[name]
