"""Which device and dtype to run on: automatic (cuda, then cpu) unless the user says otherwise.

Precision `auto` means bf16 only where the hardware computes it natively (CUDA GPUs with bf16,
CPUs with AVX512_BF16 or AMX) and fp32 elsewhere: on a CPU without native BF16 (AVX2 only),
PyTorch emulates bf16 matmuls and runs them about 20x slower than fp32.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

import torch

from lmstack.errors import LmstackError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
PRECISIONS = ("auto", "fp32", "bf16")
# /proc/cpuinfo flags of x86 CPUs that compute bf16 dot products in hardware.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


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


@functools.cache
def cpu_features() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matmuls in hardware (not emulated through fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_features() for flag in NATIVE_BF16_CPU_FLAGS)
    return False


def describe_cpu() -> str:
    """One line for benchmark reports: the CPU model and the SIMD features that decide speed."""
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "asimd") if f in cpu_features()]
    return f"{platform.processor() or platform.machine()} ({', '.join(simd) or 'no SIMD flags read'})"


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` becomes bf16 or fp32 by the hardware; a forced bf16 on emulated hardware warns once."""
    if precision not in PRECISIONS:
        raise LmstackError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        _warn_emulated_bf16(device.type)
    return precision


def default_dtype(device: torch.device) -> torch.dtype:
    """The inference dtype `auto` picks: bf16 where the hardware has it, fp32 elsewhere."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def parse_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """A dtype by name (`auto`/None: the device's default); bf16 on emulated hardware warns."""
    if name in (None, "auto"):
        return default_dtype(device)
    if name not in DTYPES:
        raise LmstackError(f"unknown dtype '{name}'; use auto or one of {', '.join(DTYPES)}")
    if DTYPES[name] == torch.bfloat16 and not native_bf16(device):
        _warn_emulated_bf16(device.type)
    return DTYPES[name]


@functools.cache
def _warn_emulated_bf16(device_type: str) -> None:
    log.warning("warning: this %s has no native bf16, so bf16 runs emulated and far slower than fp32; "
                "use fp32 (or auto)", device_type.upper())
