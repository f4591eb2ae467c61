"""Mixture-of-experts assembly: a Mixtral checkpoint that transformers loads with our logits, routers
that point where the base model's MLP inputs point, experts copied exactly."""

from __future__ import annotations

import json

import pytest
import torch

from merge_models import read_weights, tiny_llama
from lmstack.errors import LmstackError
from lmstack.merge import merge

transformers = pytest.importorskip("transformers")

PROMPTS = [["t5 t6 t7 t8", "t9 t5 t6"], ["t40 t41 t42", "t43 t44 t40 t41"], ["t90 t91", "t92 t93 t94 t95"]]


def moe_config(family: dict[str, str], gate_mode: str = "hidden", experts=("ft1", "ft2", "ft3"), **extra) -> dict:
    return {"base_model": family["base"], "gate_mode": gate_mode, "experts_per_token": 2, "dtype": "float32",
            "experts": [{"source_model": family[name], "positive_prompts": prompts}
                        for name, prompts in zip(experts, PROMPTS)], **extra}


def test_our_mixture_of_experts_block_equals_transformers_mixtral(tmp_path):
    from pathlib import Path

    from lmstack.model import hf_io
    from lmstack.model.weights import build_model

    torch.manual_seed(0)
    config = transformers.MixtralConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=128)
    reference = transformers.MixtralForCausalLM(config).eval()
    reference.save_pretrained(tmp_path)
    ours = build_model(hf_io.read_config(Path(tmp_path)), hf_io.read_state_dict(Path(tmp_path))).eval()
    ids = torch.randint(0, 128, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)


def test_assembled_moe_loads_in_transformers_with_our_logits(tiny_family, tmp_path):
    from lmstack.hub.load import load_model

    result = merge(moe_config(tiny_family), tmp_path / "moe")
    hf = json.loads((tmp_path / "moe" / "config.json").read_text())
    assert hf["architectures"] == ["MixtralForCausalLM"] and hf["num_local_experts"] == 3
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "moe", dtype=torch.float32).eval()
    ours = load_model(str(tmp_path / "moe"), device="cpu", dtype="fp32")
    ids = torch.tensor([[5, 6, 7, 40, 41, 90, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours.model(ids), theirs(ids).logits, atol=1e-4, rtol=1e-4)
    weights, ft2 = read_weights(tmp_path / "moe"), read_weights(tiny_family["ft2"])
    assert torch.equal(weights["model.layers.3.block_sparse_moe.experts.1.w2.weight"],
                       ft2["model.layers.3.mlp.down_proj.weight"])
    assert result.method == "moe" and len(result.parents) == 4


def test_hidden_routers_point_along_the_base_models_mlp_inputs(tiny_family, tmp_path):
    """Computed again with transformers: each row is the mean MLP input of that expert's prompts."""
    from lmstack.tokenizer import Tokenizer

    merge(moe_config(tiny_family), tmp_path / "moe")
    weights = read_weights(tmp_path / "moe")
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_family["base"], dtype=torch.float32).eval()
    tokenizer = Tokenizer.from_dir(tiny_family["base"])
    for expert, prompts in enumerate(PROMPTS):
        seen = {layer: [] for layer in range(4)}
        hooks = [base.model.layers[layer].mlp.register_forward_pre_hook(
            lambda module, args, layer=layer: seen[layer].append(args[0][0])) for layer in range(4)]
        with torch.no_grad():
            for prompt in prompts:
                base(torch.tensor([tokenizer.encode(prompt)]))
        for hook in hooks:
            hook.remove()
        for layer in range(4):
            direction = torch.stack([states.mean(dim=0) for states in seen[layer]]).mean(dim=0)
            row = weights[f"model.layers.{layer}.block_sparse_moe.gate.weight"][expert]
            torch.testing.assert_close(row, direction / direction.norm(), atol=1e-5, rtol=1e-4)


def test_identical_experts_reproduce_the_dense_model(tiny_family, tmp_path):
    """The routing weights of the chosen experts sum to one, so copies of one MLP change nothing."""
    from lmstack.hub.load import load_model

    config = moe_config(tiny_family, gate_mode="random", experts=("base", "base", "base"))
    merge(config, tmp_path / "moe", seed=3)
    moe = load_model(str(tmp_path / "moe"), device="cpu", dtype="fp32")
    dense = load_model(tiny_family["base"], device="cpu", dtype="fp32")
    ids = torch.tensor([[5, 6, 7, 40, 41, 90, 3]])
    with torch.no_grad():
        torch.testing.assert_close(moe.model(ids), dense.model(ids), atol=1e-5, rtol=1e-5)


def test_cheap_embed_routers_are_the_mean_prompt_embedding(tiny_family, tmp_path):
    merge(moe_config(tiny_family, gate_mode="cheap_embed"), tmp_path / "moe")
    router = read_weights(tmp_path / "moe")["model.layers.2.block_sparse_moe.gate.weight"]
    embeddings = read_weights(tiny_family["base"])["model.embed_tokens.weight"]
    ids = [token for prompt in PROMPTS[1] for token in [2] + [int(word[1:]) for word in prompt.split()]]  # BOS first
    expected = embeddings[ids].mean(dim=0)
    torch.testing.assert_close(router[1], expected / expected.norm())


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(experts_per_token=4), "experts_per_token (4) is more than the 3 experts"),
    (lambda c: c["experts"][1].pop("positive_prompts"), "expert 2 needs non-empty positive_prompts"),
    (lambda c: c.update(gate_mode="psychic"), "gate_mode"),
    (lambda c: c.update(experts=c["experts"][:1]), "experts"),
])
def test_bad_moe_configs_are_refused(change, message, tiny_family, tmp_path):
    config = moe_config(tiny_family)
    change(config)
    with pytest.raises(LmstackError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge(config, tmp_path / "moe")
    assert not (tmp_path / "moe").exists()


def test_a_qwen2_base_is_refused(tmp_path):
    from merge_models import random_state, save_model

    qwen = tiny_llama(family="qwen2")
    paths = {name: save_model(tmp_path / name, qwen, random_state(qwen, i)) for i, name in enumerate(["a", "b"])}
    config = {"base_model": paths["a"], "gate_mode": "random",
              "experts": [{"source_model": paths["a"]}, {"source_model": paths["b"]}]}
    with pytest.raises(LmstackError, match="Llama or Mistral"):
        merge(config, tmp_path / "moe")
