"""LoRA / rsLoRA / DoRA layers: freezing, training, merging, and user errors."""

from __future__ import annotations

import math

import pytest
import torch
from peft_tiny_models import logits, make_tiny_llama, randomize_adapters
from torch import nn

from lmstack.errors import LmstackError
from lmstack.peft import LoraConfig, LoraLinear, apply_lora, count_parameters, lora_layers, merge_lora

VARIANTS = {"lora": dict(), "rslora": dict(use_rslora=True), "dora": dict(use_dora=True)}


def test_fresh_adapter_is_a_no_op(input_ids):
    model = apply_lora(make_tiny_llama(), LoraConfig(r=4, use_dora=True))
    assert torch.equal(logits(model, input_ids), logits(make_tiny_llama(), input_ids))


def test_scaling_follows_lora_and_rslora():
    assert LoraConfig(r=16, alpha=32).scaling == 2.0
    assert LoraConfig(r=16, alpha=32, use_rslora=True).scaling == 32 / math.sqrt(16)


def test_target_suffixes_select_only_those_layers():
    model = apply_lora(make_tiny_llama(), LoraConfig(target_modules=["q_proj", "layers.1.mlp.up_proj"]))
    names = [name for name, _ in lora_layers(model)]
    assert names == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj"]


def test_all_linear_skips_lm_head():
    model = apply_lora(make_tiny_llama(), LoraConfig(target_modules="all-linear"))
    assert len(list(lora_layers(model))) == 2 * 7
    assert isinstance(model.lm_head, nn.Linear)


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_adapter_params_are_trainable(variant):
    model = apply_lora(make_tiny_llama(), LoraConfig(r=4, **VARIANTS[variant]))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    adapter_names = ("lora_A", "lora_B", "lora_magnitude_vector")
    assert trainable and all(any(a in name for a in adapter_names) for name in trainable)

    counts = count_parameters(model)
    # Per layer: r·(in + out), plus `out` magnitudes for DoRA. Projections of the tiny model:
    # q, o: 64→64; k, v: 64→32; gate, up: 64→128; down: 128→64.
    shapes = [(64, 64), (64, 32), (64, 32), (64, 64), (64, 128), (64, 128), (128, 64)]
    per_layer = sum(4 * (i + o) + (o if variant == "dora" else 0) for i, o in shapes)
    assert counts.trainable == 2 * per_layer
    assert counts.total == sum(p.numel() for p in make_tiny_llama().parameters()) + counts.trainable


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step_changes_only_adapter_params(variant, input_ids):
    model = apply_lora(make_tiny_llama(), LoraConfig(r=4, **VARIANTS[variant])).train()
    randomize_adapters(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)

    model(input_ids, labels=input_ids).loss.backward()
    optimizer.step()

    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed == trainable


@pytest.mark.parametrize("variant", VARIANTS)
def test_merge_gives_same_logits_and_plain_linears(variant, input_ids):
    model = apply_lora(make_tiny_llama(), LoraConfig(r=4, alpha=8, **VARIANTS[variant]))
    randomize_adapters(model)
    expected = logits(model, input_ids)

    merge_lora(model)

    assert not list(lora_layers(model))
    assert type(model.model.layers[0].self_attn.q_proj) is nn.Linear
    assert set(model.state_dict()) == set(make_tiny_llama().state_dict())
    assert (logits(model, input_ids) - expected).abs().max() < 1e-5


def test_dora_norm_gets_no_gradient_but_magnitude_does():
    layer = LoraLinear(nn.Linear(8, 6), LoraConfig(r=2, use_dora=True, init_lora_weights=False))
    layer(torch.randn(3, 8)).sum().backward()
    assert layer.lora_magnitude_vector.grad is not None
    assert layer.lora_A.weight.grad is not None and layer.lora_B.weight.grad is not None

    # With the norm held constant, d out / d B equals that of m/||V|| * (W + sBA)x with ||V|| fixed.
    x = torch.randn(3, 8)
    weight, bias = layer.base_layer.weight, layer.base_layer.bias
    norm = torch.linalg.vector_norm(weight + layer.delta_weight(), dim=1).detach()
    B = layer.lora_B.weight.detach().clone().requires_grad_(True)
    reference = (layer.lora_magnitude_vector.detach() / norm).unsqueeze(1) * (
        weight + layer.scaling * B @ layer.lora_A.weight.detach()
    )
    (x @ reference.T + bias).sum().backward()
    layer.zero_grad()
    layer(x).sum().backward()
    assert torch.allclose(layer.lora_B.weight.grad, B.grad, atol=1e-6)


def test_no_matching_module_lists_available_names():
    with pytest.raises(LmstackError, match="available names: down_proj, gate_proj, k_proj, lm_head"):
        apply_lora(make_tiny_llama(), LoraConfig(target_modules=["query"]))


def test_applying_twice_is_refused():
    model = apply_lora(make_tiny_llama(), LoraConfig())
    with pytest.raises(LmstackError, match="already has LoRA"):
        apply_lora(model, LoraConfig())


@pytest.mark.parametrize(
    "bad", [dict(r=0), dict(alpha=0), dict(dropout=1.0), dict(target_modules="q_proj"), dict(target_modules=[])]
)
def test_bad_config_is_a_user_error(bad):
    with pytest.raises(LmstackError):
        LoraConfig(**bad)
