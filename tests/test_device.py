"""Precision `auto`: bf16 only where the hardware computes it natively, with a warning when forced."""

from __future__ import annotations

import logging

import pytest
import torch

from lmstack import device
from lmstack.errors import LmstackError

CPU = torch.device("cpu")


@pytest.fixture
def cpu_flags(monkeypatch):
    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(device, "cpu_features", lambda: frozenset(flags))
        device._warn_emulated_bf16.cache_clear()

    return set_flags


def test_auto_is_fp32_on_an_avx2_only_cpu(cpu_flags):
    cpu_flags("avx", "avx2", "fma")
    assert device.resolve_precision("auto", CPU) == "fp32"
    assert device.default_dtype(CPU) == torch.float32
    assert device.parse_dtype(None, CPU) == torch.float32


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bf16_where_the_cpu_has_native_bf16(cpu_flags, flag):
    cpu_flags("avx2", "avx512f", flag)
    assert device.resolve_precision("auto", CPU) == "bf16"
    assert device.parse_dtype("auto", CPU) == torch.bfloat16


def test_forcing_bf16_on_emulated_hardware_warns_once(cpu_flags, caplog):
    cpu_flags("avx2")
    with caplog.at_level(logging.WARNING, logger="lmstack.device"):
        assert device.resolve_precision("bf16", CPU) == "bf16"
        assert device.parse_dtype("bf16", CPU) == torch.bfloat16
    warnings = [r for r in caplog.records if "no native bf16" in r.getMessage()]
    assert len(warnings) == 1


def test_a_forced_fp32_never_warns_and_unknown_values_are_refused(cpu_flags, caplog):
    cpu_flags("avx512_bf16")
    with caplog.at_level(logging.WARNING, logger="lmstack.device"):
        assert device.resolve_precision("fp32", CPU) == "fp32"
    assert not caplog.records
    with pytest.raises(LmstackError, match="unknown precision 'fp8'"):
        device.resolve_precision("fp8", CPU)
    with pytest.raises(LmstackError, match="unknown dtype 'int3'"):
        device.parse_dtype("int3", CPU)


def test_training_autocast_follows_the_hardware(cpu_flags):
    from lmstack.train.core import autocast

    cpu_flags("avx2")
    with autocast(CPU, "auto"):
        assert not torch.is_autocast_enabled("cpu")
    cpu_flags("avx512_bf16")
    with autocast(CPU, "auto"):
        assert torch.is_autocast_enabled("cpu")


def test_this_machine_reports_its_features():
    assert isinstance(device.describe_cpu(), str) and device.describe_cpu()
