"""The quantized layers: packed kernels against the dequantized matmul, W8A8 against a float
reference, and whole quantized models saved, reloaded and run (tiny random models)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmstack.model.quantized import Int4Linear, Int8Linear, pack_int4, unpack_int4
from lmstack.quant.grids import absmax_grid, minmax_grid, quantize_rtn, zeropoint_grid
from lmstack.quant.methods import packed_layer, quantize_model
from lmstack.quant.settings import parse_settings

from quant_tiny_models import tiny_model


def _weight(n: int = 64, k: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


def _x(rows: int, k: int = 128) -> torch.Tensor:
    return torch.randn(rows, k, generator=torch.Generator().manual_seed(rows))


@pytest.mark.parametrize("grid", [absmax_grid(8), zeropoint_grid(8), absmax_grid(8, 0)],
                         ids=["absmax-channel", "zeropoint-channel", "absmax-tensor"])
def test_int8_kernel_computes_the_dequantized_matmul(grid):
    layer = packed_layer(quantize_rtn(_weight(), grid), grid, torch.randn(64), parse_settings(method="int8"))
    assert isinstance(layer, Int8Linear)
    reference = F.linear(_x(3), layer.dequantized_weight(), layer.bias)
    kernel = layer(_x(3))  # 3 rows: the bf16 weight-only kernel
    assert torch.allclose(kernel, reference, rtol=0.02, atol=0.02)
    many = _x(40)  # 40 rows: dequantized in the activations' dtype, exact in float32
    assert torch.allclose(layer(many), F.linear(many, layer.dequantized_weight(), layer.bias), atol=1e-5)


def test_int4_kernel_computes_the_dequantized_matmul():
    grid = minmax_grid(4, 32)
    quantized = quantize_rtn(_weight(), grid)
    layer = packed_layer(quantized, grid, None, parse_settings(method="int4"))
    assert isinstance(layer, Int4Linear) and layer._kernel is not None
    assert torch.allclose(layer.dequantized_weight(), quantized.dequantize(), atol=1e-3)  # fp16 scales
    assert torch.allclose(layer(_x(2)), F.linear(_x(2), layer.dequantized_weight()), rtol=0.02, atol=0.02)
    assert torch.equal(unpack_int4(pack_int4(quantized.q)), quantized.q.to(torch.uint8))


def test_int8_layer_survives_weights_memory_mapped_at_an_odd_offset(tmp_path):
    from safetensors.torch import load_file, save_file

    grid = absmax_grid(8)
    quantized = quantize_rtn(_weight(), grid)
    # A 3-byte tensor first puts the weight at an unaligned address in the memory-mapped file.
    save_file({"a": torch.zeros(3, dtype=torch.int8), "q": quantized.q.to(torch.int8).contiguous()},
              tmp_path / "w.safetensors")
    mapped = load_file(tmp_path / "w.safetensors")["q"]
    layer = Int8Linear(mapped, quantized.scale)
    x = _x(8)  # 8+ rows crashed torch's kernel on unaligned weights
    assert torch.allclose(layer(x), F.linear(x, layer.dequantized_weight()), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("activations", ["int8", "int8-outliers"])
def test_int8_activations_match_a_float_reference(activations):
    grid = absmax_grid(8)
    quantized = quantize_rtn(_weight(), grid)
    layer = Int8Linear(quantized.q.to(torch.int8), quantized.scale, activations=activations, outlier_threshold=6.0)
    x = _x(5).clamp(-4, 4)
    x[:, 7] = 20.0  # an outlier feature
    weight = layer.dequantized_weight()
    outliers = torch.zeros(128, dtype=torch.bool)
    if activations == "int8-outliers":
        outliers[7] = True
    regular = x.masked_fill(outliers, 0)
    step = regular.abs().amax(-1, keepdim=True) / 127
    expected = (torch.round(regular / step) * step) @ weight.t() + x[:, outliers] @ weight[:, outliers].t()
    assert torch.allclose(layer(x), expected, atol=1e-4)
    # Keeping the outlier in float is what LLM.int8() is for: it beats plain W8A8 on this input.
    exact = F.linear(x, weight)
    error = (layer(x) - exact).abs().max()
    plain = (Int8Linear(quantized.q.to(torch.int8), quantized.scale, activations="int8")(x) - exact).abs().max()
    assert error <= plain


METHODS = [
    {"method": "int8"}, {"method": "int8", "scheme": "zeropoint", "granularity": "group", "group_size": 32},
    {"method": "int8", "granularity": "tensor"}, {"method": "int4"}, {"method": "int4", "head": "int4"},
    {"method": "nf4"}, {"method": "llm-int8"},
]


@pytest.mark.parametrize("settings", METHODS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_quantized_model_reloads_with_the_same_logits(tmp_path, tiny_config, settings):
    from lmstack.model import hf_io
    from lmstack.model.quantized import quantized_layers, quantized_state
    from lmstack.model.weights import build_model

    from quant_tiny_models import tiny_tokenizer

    model = tiny_model(tiny_config)
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(ids)
        report = quantize_model(model, parse_settings(**settings))
        after = model(ids)
    assert report.layers == len(quantized_layers(model)) > 0
    assert 0 < report.errors["all"].relative < 0.2
    assert (after - before).abs().mean() < 0.25 * before.abs().mean()  # still the same model, roughly
    state, layers = quantized_state(model)
    hf_io.write_model_dir(tmp_path / "q", tiny_config, state, tiny_tokenizer(128), {},
                          quantization={"method": settings["method"], "layers": layers})
    reloaded = build_model(tiny_config, hf_io.read_state_dict(tmp_path / "q"), hf_io.read_quantization(tmp_path / "q"))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids), after, atol=1e-5)
    stored = sum(p.stat().st_size for p in (tmp_path / "q").glob("*.safetensors"))
    dense = sum(t.numel() * 4 for t in tiny_model(tiny_config).state_dict().values())
    assert stored < dense


def test_untied_model_keeps_its_embedding_and_quantizes_its_head(tiny_config):
    from dataclasses import replace

    config = replace(tiny_config, tie_word_embeddings=False)
    model = tiny_model(config)
    quantize_model(model, parse_settings(method="int4"))
    assert isinstance(model.lm_head, Int8Linear)
    assert isinstance(model.model.embed_tokens, torch.nn.Embedding)


def test_lora_trains_on_top_of_a_quantized_model(tiny_config):
    from lmstack.peft import LoraConfig, apply_lora

    model = tiny_model(tiny_config)
    quantize_model(model, parse_settings(method="int4"))
    apply_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(0, 128, (1, 8))
    loss = F.cross_entropy(model(ids)[0, :-1], ids[0, 1:])
    loss.backward()
    # B starts at zero, so the first gradient reaches B (through the quantized layers' inputs)
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
