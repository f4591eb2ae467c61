"""NF4 against the QLoRA paper's definition, a reference written here, and bitsandbytes when present."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmstack.peft import nf4_code_values, quantize_linear_nf4, quantize_model_nf4
from lmstack.model.nf4 import (
    dequantize_absmax,
    dequantize_blocks,
    pack_4bit,
    quantize_absmax,
    quantize_blocks,
    unpack_4bit,
)

# The NF4 table published with QLoRA (appendix E of the paper; also bitsandbytes' `nf4` code).
PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip


@pytest.fixture
def gaussian_weight() -> torch.Tensor:
    return 0.02 * torch.randn(512, 256, generator=torch.Generator().manual_seed(0))


def reference_nf4(weight: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper, literally: per block, divide by absmax and take the index of the nearest code."""
    codes = torch.tensor(PUBLISHED_NF4)
    blocks = weight.reshape(-1, block_size)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    indices = (blocks / absmax).unsqueeze(-1).sub(codes).abs().argmin(dim=-1)
    return indices.flatten(), (codes[indices] * absmax).reshape(weight.shape)


def naive_int4_absmax(weight: torch.Tensor, block_size: int) -> torch.Tensor:
    """Symmetric 4-bit integers (-7..7) scaled by the block's absmax."""
    blocks = weight.reshape(-1, block_size)
    scale = blocks.abs().amax(dim=1, keepdim=True) / 7
    return (torch.round(blocks / scale).clamp(-7, 7) * scale).reshape(weight.shape)


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx - exact).norm() / exact.norm()).item()


def test_code_values_equal_published_table():
    assert torch.allclose(nf4_code_values(), torch.tensor(PUBLISHED_NF4), atol=1e-6)


def test_first_level_matches_reference(gaussian_weight):
    indices, absmax = quantize_blocks(gaussian_weight)
    ref_indices, ref_values = reference_nf4(gaussian_weight)
    assert torch.equal(indices.long(), ref_indices)
    assert torch.allclose(dequantize_blocks(indices, absmax).view_as(gaussian_weight), ref_values, atol=1e-7)


def test_packing_two_indices_per_byte_round_trips():
    indices = torch.randint(0, 16, (1000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = pack_4bit(indices)
    assert packed.dtype == torch.uint8 and packed.numel() == 500
    assert packed[0] == indices[0] * 16 + indices[1]
    assert torch.equal(unpack_4bit(packed), indices)


def test_double_quantized_absmax_error_is_half_a_step(gaussian_weight):
    _, absmax = quantize_blocks(gaussian_weight)
    quantized = quantize_absmax(absmax)
    assert quantized.values.dtype == torch.int8 and quantized.scales.numel() == absmax.numel() // 256
    error = (dequantize_absmax(quantized, absmax.numel()) - absmax).abs().view(-1, 256)
    # Round-to-nearest on a grid of step `scale` errs by at most half a step (plus float rounding).
    assert (error <= quantized.scales.unsqueeze(1) * 0.5 + 1e-8).all()


def test_error_is_bounded_and_beats_naive_absmax(gaussian_weight):
    linear = nn.Linear(256, 512, bias=False)
    linear.weight.data = gaussian_weight
    dequantized = quantize_linear_nf4(linear).dequantized_weight()

    # Each value lies within half the widest gap between codes (0.139) of its block's absmax.
    codes = torch.tensor(PUBLISHED_NF4)
    half_gap = (codes[1:] - codes[:-1]).max() / 2
    absmax = gaussian_weight.reshape(-1, 64).abs().amax(dim=1, keepdim=True)
    error = (dequantized - gaussian_weight).abs().reshape(-1, 64)
    assert (error <= absmax * (half_gap + 0.01)).all()

    nf4 = relative_error(dequantized, gaussian_weight)
    assert nf4 < 0.10
    assert nf4 < 0.9 * relative_error(naive_int4_absmax(gaussian_weight, 64), gaussian_weight)
    assert nf4 < 0.6 * relative_error(naive_int4_absmax(gaussian_weight, gaussian_weight.numel()), gaussian_weight)


def test_storage_is_about_half_a_byte_per_param():
    model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))
    report = quantize_model_nf4(model)
    # 4 bits + 8 bits per 64 (absmax) + 32 bits per 64·256 (scale), in bytes.
    assert report.params == 2 * 256 * 512
    assert report.bytes_per_param == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256), abs=1e-4)
    assert report.saved_bytes == report.dense_bytes - report.nf4_bytes > 0.87 * report.dense_bytes
    assert 0 < report.relative_error < 0.1


def test_odd_shapes_are_padded_and_bias_kept():
    linear = nn.Linear(37, 11)
    quantized = quantize_linear_nf4(linear)
    x = torch.randn(4, 37)
    expected = x @ quantized.dequantized_weight().T + linear.bias
    assert torch.allclose(quantized(x), expected, atol=1e-6)
    assert relative_error(quantized.dequantized_weight(), linear.weight.detach()) < 0.15


def test_bfloat16_compute_dtype_keeps_input_dtype():
    quantized = quantize_linear_nf4(nn.Linear(64, 32), compute_dtype=torch.bfloat16)
    assert quantized.dequantized_weight().dtype == torch.bfloat16
    assert quantized(torch.randn(2, 64)).dtype == torch.float32


def test_matches_bitsandbytes_when_available(gaussian_weight):
    functional = pytest.importorskip("bitsandbytes.functional")
    try:
        packed, state = functional.quantize_4bit(
            gaussian_weight, blocksize=64, compress_statistics=False, quant_type="nf4"
        )
    except Exception as err:  # bitsandbytes builds without a CPU backend raise here
        pytest.skip(f"bitsandbytes cannot quantize on CPU here: {err}")
    indices, absmax = quantize_blocks(gaussian_weight)
    assert torch.equal(packed.flatten(), pack_4bit(indices))
    ours = dequantize_blocks(indices, absmax).view_as(gaussian_weight)
    assert torch.allclose(functional.dequantize_4bit(packed, state), ours, atol=1e-7)
