"""Adapters round-trip with the `peft` library: same files, same logits, in both directions."""

from __future__ import annotations

import json

import pytest
import torch
from peft_tiny_models import logits, make_tiny_llama, randomize_adapters

from lmstack.errors import LmstackError
from lmstack.peft import LoraConfig, apply_lora, load_adapter, save_adapter

peft = pytest.importorskip("peft")

VARIANTS = {
    "lora": dict(),
    "rslora": dict(use_rslora=True),
    "dora": dict(use_dora=True),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_our_adapter_loads_in_peft_with_same_logits(tmp_path, input_ids, variant):
    config = LoraConfig(r=4, alpha=16, target_modules="all-linear", **VARIANTS[variant])
    ours = apply_lora(make_tiny_llama(), config)
    randomize_adapters(ours)
    save_adapter(ours, tmp_path / "adapter", base_model="tiny-llama", config=config)

    theirs = peft.PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "adapter")

    assert theirs.peft_config["default"].use_dora == config.use_dora
    assert theirs.peft_config["default"].use_rslora == config.use_rslora
    assert (logits(ours, input_ids) - logits(theirs, input_ids)).abs().max() < 1e-5
    # The adapter really changes the model, so the equality above is not trivial.
    assert (logits(ours, input_ids) - logits(make_tiny_llama(), input_ids)).abs().max() > 1e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_peft_adapter_loads_in_ours_with_same_logits(tmp_path, input_ids, variant):
    peft_config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **VARIANTS[variant],
    )
    theirs = peft.get_peft_model(make_tiny_llama(), peft_config).eval()
    randomize_adapters(theirs)
    theirs.save_pretrained(tmp_path / "adapter")

    ours = load_adapter(make_tiny_llama(), tmp_path / "adapter")

    assert (logits(ours, input_ids) - logits(theirs, input_ids)).abs().max() < 1e-5


def test_saved_files_follow_peft_layout(tmp_path):
    config = LoraConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"], use_dora=True)
    model = apply_lora(make_tiny_llama(), config)
    save_adapter(model, tmp_path / "adapter", base_model="tiny-llama", config=config)

    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["task_type"] == "CAUSAL_LM"
    assert saved["base_model_name_or_path"] == "tiny-llama"
    assert saved["target_modules"] == [f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight" in keys
    assert "base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector" in keys
    assert len(keys) == 4 * 3


def test_load_rejects_adapter_for_another_base(tmp_path):
    config = LoraConfig(r=2, alpha=4, target_modules=["q_proj"])
    save_adapter(apply_lora(make_tiny_llama(), config), tmp_path / "adapter", base_model="x", config=config)
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    tensors[key] = torch.zeros(2, 32)
    save_file(tensors, path)
    with pytest.raises(LmstackError, match="shape"):
        load_adapter(make_tiny_llama(), tmp_path / "adapter")


def test_load_reports_missing_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmstackError, match="adapter_config.json"):
        load_adapter(make_tiny_llama(), tmp_path / "empty")


def test_adapter_trained_on_our_transformer_loads_in_peft_on_hf_llama(tmp_path, input_ids):
    transformer = pytest.importorskip("lmstack.model.transformer")
    from lmstack.model.config import ModelConfig

    hf_model = make_tiny_llama()
    ours = transformer.Transformer(ModelConfig.from_hf(hf_model.config.to_dict())).eval()
    ours.load_state_dict(hf_model.state_dict())
    config = LoraConfig(r=4, alpha=8, use_dora=True)
    apply_lora(ours, config)
    randomize_adapters(ours)
    save_adapter(ours, tmp_path / "adapter", base_model="tiny-llama", config=config)

    theirs = peft.PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "adapter")

    with torch.no_grad():
        assert (ours(input_ids) - theirs(input_ids).logits).abs().max() < 1e-5
