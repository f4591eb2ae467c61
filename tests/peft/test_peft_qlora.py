"""QLoRA: LoRA on an NF4 base behaves exactly like LoRA on the dequantized base."""

from __future__ import annotations

import pytest
import torch
from peft_tiny_models import logits, make_tiny_llama, randomize_adapters

from lmstack.peft import LoraConfig, NF4Linear, apply_lora, load_adapter, merge_lora, prepare_qlora, save_adapter

VARIANTS = {"lora": dict(), "dora": dict(use_dora=True)}


def dequantized_twin(qlora_model: torch.nn.Module) -> torch.nn.Module:
    """A plain model whose linear weights are the QLoRA model's dequantized NF4 weights."""
    dense = make_tiny_llama()
    with torch.no_grad():
        for name, module in qlora_model.named_modules():
            if isinstance(module, NF4Linear):
                dense.get_submodule(name.removesuffix(".base_layer")).weight.copy_(module.dequantized_weight())
    return dense


def copy_adapters(source: torch.nn.Module, target: torch.nn.Module) -> None:
    adapters = {name: p for name, p in source.named_parameters() if p.requires_grad}
    target.load_state_dict(adapters, strict=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_qlora_equals_lora_on_dequantized_base(variant, input_ids):
    config = LoraConfig(r=4, alpha=8, **VARIANTS[variant])
    qlora = make_tiny_llama()
    report = prepare_qlora(qlora, config)
    randomize_adapters(qlora)
    lora = apply_lora(dequantized_twin(qlora), config)
    copy_adapters(qlora, lora)

    assert report.layers == 2 * 7 and 0 < report.relative_error < 0.1
    assert (logits(qlora, input_ids) - logits(lora, input_ids)).abs().max() < 1e-5

    # Gradients reach the adapters through the NF4 base exactly as through the dense one.
    qlora(input_ids, labels=input_ids).loss.backward()
    lora(input_ids, labels=input_ids).loss.backward()
    lora_grads = {name: p.grad for name, p in lora.named_parameters() if p.requires_grad}
    for name, param in qlora.named_parameters():
        if param.requires_grad:
            assert torch.allclose(param.grad, lora_grads[name], atol=1e-5), name


def test_qlora_step_trains_adapters_only(input_ids):
    model = make_tiny_llama()
    prepare_qlora(model, LoraConfig(r=4))
    randomize_adapters(model)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)

    model.train()(input_ids, labels=input_ids).loss.backward()
    optimizer.step()

    changed = {name for name, t in model.state_dict().items() if not torch.equal(t, before[name])}
    assert changed and all("lora_" in name for name in changed)
    assert len(changed) == len(trainable)


def test_qlora_adapter_merges_and_reloads(tmp_path, input_ids):
    config = LoraConfig(r=4, alpha=8, use_dora=True)
    qlora = make_tiny_llama()
    prepare_qlora(qlora, config)
    randomize_adapters(qlora)
    expected = logits(qlora, input_ids)
    save_adapter(qlora, tmp_path / "adapter", base_model="tiny-llama", config=config)

    reloaded = load_adapter(dequantized_twin(qlora), tmp_path / "adapter")
    merge_lora(qlora)

    assert (logits(reloaded, input_ids) - expected).abs().max() < 1e-5
    assert (logits(qlora, input_ids) - expected).abs().max() < 1e-5


def test_bfloat16_qlora_runs_and_saves_memory(input_ids):
    model = make_tiny_llama()
    report = prepare_qlora(model, LoraConfig(r=4), compute_dtype=torch.bfloat16)
    out = logits(model, input_ids)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert report.nf4_bytes < 0.14 * report.dense_bytes  # fp32 → ~4.1 bits per weight
