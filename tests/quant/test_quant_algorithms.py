"""The quantization algorithms against their definitions: absmax and zero-point rounding, GGUF's
blocks against the `gguf` package's reference codecs, GPTQ, and the equivalence transforms AWQ
and SmoothQuant rely on."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from lmstack.quant.gguf_blocks import GGUF_GRIDS, pack
from lmstack.quant.gptq import gptq_quantize
from lmstack.quant.grids import (
    absmax_grid,
    error_stats,
    grouped,
    minmax_grid,
    quantize_rtn,
    round_codes,
    zeropoint_grid,
)

from quant_tiny_models import tiny_model


def _weight(n: int = 48, k: int = 256, seed: int = 0) -> torch.Tensor:
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05
    w[5, 9] = 0.9  # one outlier
    return w


def test_absmax_per_tensor_channel_and_group_follow_the_formula():
    w = _weight()
    per_tensor = quantize_rtn(w, absmax_grid(8, 0))
    assert per_tensor.scale.shape == (1, 1)
    assert per_tensor.scale.item() == pytest.approx(w.abs().max().item() / 127)
    assert torch.equal(per_tensor.q.float(), torch.round(w / per_tensor.scale.item()).clamp(-127, 127))
    per_channel = quantize_rtn(w, absmax_grid(8))
    assert torch.allclose(per_channel.scale[:, 0], w.abs().amax(dim=1) / 127)
    per_group = quantize_rtn(w, absmax_grid(8, 64))
    assert torch.allclose(per_group.scale, w.view(48, 4, 64).abs().amax(-1) / 127)
    errors = [error_stats(w, q.dequantize()).relative for q in (per_tensor, per_channel, per_group)]
    assert errors[0] > errors[1] > errors[2]  # finer groups, smaller error (the outlier spoils less)


def test_zero_point_represents_zero_exactly_and_uses_the_whole_range():
    w = _weight().abs() + 0.01  # all positive: half of an absmax range would go unused
    zero_point = quantize_rtn(w, zeropoint_grid(8))
    assert zero_point.q.min() >= -128 and zero_point.q.max() <= 127
    zeros = torch.round(-zero_point.offset / zero_point.scale)
    assert torch.allclose(zeros * zero_point.scale, -zero_point.offset, atol=1e-7)  # 0.0 is a grid point
    half_step = zero_point.scale / 2
    assert ((zero_point.dequantize() - w).abs() <= half_step + 1e-6).all()
    absmax = quantize_rtn(w, absmax_grid(8))
    assert error_stats(w, zero_point.dequantize()).mse < error_stats(w, absmax.dequantize()).mse


def test_error_stats_on_a_known_example():
    stats = error_stats(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0]))
    assert stats.mse == 0.5 and stats.max_abs == 1.0
    assert stats.relative == pytest.approx(1 / 5)
    assert stats.sqnr_db == pytest.approx(10 * math.log10(25))


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1])
def test_round_to_nearest_blocks_equal_the_reference_quantizer(qtype):
    w = _weight()
    assert np.array_equal(pack(qtype, quantize_rtn(w, GGUF_GRIDS[qtype])), quantize(w.numpy(), qtype))


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K])
def test_blocks_decode_to_the_chosen_values_with_the_reference_dequantizer(qtype):
    w = _weight()
    quantized = quantize_rtn(w, GGUF_GRIDS[qtype], search=4)
    decoded = dequantize(pack(qtype, quantized), qtype).reshape(w.shape)
    assert np.array_equal(decoded, quantized.dequantize().numpy())
    bits = {T.Q8_0: 8, T.Q4_0: 4, T.Q4_1: 4, T.Q5_0: 5, T.Q5_1: 5, T.Q4_K: 4, T.Q5_K: 5, T.Q6_K: 6}[qtype]
    assert error_stats(w, torch.from_numpy(decoded)).relative < 2.0 ** (2 - bits)


def _correlated_inputs(k: int = 256, tokens: int = 2048) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    mixing = torch.randn(k, k, generator=g) / math.sqrt(k) + torch.eye(k)
    return (torch.randn(tokens, k, generator=g) * torch.linspace(0.2, 3.0, k)) @ mixing


def test_gptq_lowers_the_output_error_of_round_to_nearest():
    w, x = _weight(), _correlated_inputs()
    hessian = x.t() @ x
    for grid in (minmax_grid(4, 32), GGUF_GRIDS[T.Q4_0], GGUF_GRIDS[T.Q4_K]):
        rtn = ((x @ (quantize_rtn(w, grid).dequantize() - w).t()) ** 2).mean()
        gptq = ((x @ (gptq_quantize(w, hessian, grid).dequantize() - w).t()) ** 2).mean()
        assert gptq < 0.85 * rtn


def test_gptq_with_uncorrelated_unit_inputs_is_round_to_nearest():
    """With H = I nothing is learned about the inputs: no error to push anywhere."""
    w, grid = _weight(), minmax_grid(4, 32)
    gptq = gptq_quantize(w, torch.eye(256), grid, damp=0.0, act_order=True)
    nearest = round_codes(grid, grouped(w, grid), gptq.scale, gptq.offset).reshape(w.shape)
    assert torch.equal(gptq.q, nearest.to(gptq.q.dtype))


def _logits_after(transform, config, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    model = tiny_model(config, seed)
    ids = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = model(ids)
        transform(model)
        return before, model(ids)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_smoothing_scales_leave_the_model_unchanged(tiny_config, family):
    from lmstack.quant.smoothing import fold_scales, input_groups

    config = tiny_config if family == "llama" else replace(
        tiny_config, family="gemma3", norm_offset=1.0, sandwich_norm=True, qk_norm=True, num_kv_heads=4,
        activation="gelu_tanh")

    def rescale(model):
        for block in model.model.layers:
            for group in input_groups(block):
                k = group.modules(block)[0].in_features
                fold_scales(block, group, torch.rand(k, generator=torch.Generator().manual_seed(k)) * 3 + 0.2)

    before, after = _logits_after(rescale, config)
    assert torch.allclose(before, after, atol=1e-4)


def test_smoothquant_evens_out_activation_channels_without_changing_the_model(tiny_config):
    from lmstack.quant.calibration import BlockRunner
    from lmstack.quant.smoothquant import smooth_block

    model = tiny_model(tiny_config)  # its attention inputs have three outlier channels
    windows = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))

    def spreads(smooth: bool) -> list[float]:
        found = []
        for _, block, stats in BlockRunner(model, windows).blocks():
            channel_max = stats["self_attn.q_proj"].abs_max
            found.append((channel_max.max() / channel_max.median()).item())
            if smooth:
                smooth_block(block, stats, alpha=0.5)
        return found

    with torch.no_grad():
        before = model(windows)
        spread_before = spreads(smooth=True)
        spread_after = spreads(smooth=False)
        assert torch.allclose(model(windows), before, atol=1e-4)
    assert all(a < 0.5 * b for a, b in zip(spread_after, spread_before))


def test_awq_scales_beat_no_scaling_on_the_layer_output():
    from torch import nn

    from lmstack.quant.awq import search_scales
    from lmstack.quant.calibration import LayerInputs

    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(4))
    x[:, :4] *= 30  # salient input channels
    linear = nn.Linear(256, 64, bias=False)
    linear.weight.data = _weight(64)
    grid = minmax_grid(4, 32)
    inputs = LayerInputs(x.t() @ x, x.abs().amax(0), x.abs().mean(0), 512, sample=x)
    scales = search_scales([linear], [grid], inputs)

    def output_error(s):
        w = linear.weight
        return ((x @ (quantize_rtn(w * s, grid).dequantize() / s - w).t()) ** 2).mean()

    assert not torch.allclose(scales, torch.ones(256))
    assert output_error(scales) < output_error(torch.ones(256))


def test_calibration_windows_are_distinct_and_spread_over_the_text():
    from lmstack.quant.calibration import calibration_windows
    from quant_tiny_models import tiny_tokenizer, word_text

    tokenizer = tiny_tokenizer(128)
    windows = calibration_windows(word_text(128, 1000, 0), tokenizer, samples=32, seq_len=64)
    assert windows.shape == (15, 64)  # every whole window of the 1000-token text, none twice
    assert len({tuple(w) for w in windows.tolist()}) == 15
    few = calibration_windows(word_text(128, 1000, 0), tokenizer, samples=3, seq_len=64)
    ids = tokenizer.encode(word_text(128, 1000, 0))
    assert few[0].tolist() == ids[:64] and few[-1].tolist() == ids[14 * 64 : 15 * 64]
