"""Our transformer against transformers' on tiny random models of every supported family."""

from __future__ import annotations

import pytest
import torch

from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)

CASES = {
    "llama3-rope-scaling": ("LlamaConfig", "LlamaForCausalLM", dict(
        SMALL, rope_theta=500000.0, max_position_embeddings=256, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "llama-linear-rope": ("LlamaConfig", "LlamaForCausalLM", dict(
        SMALL, num_key_value_heads=1, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "llama-yarn-rope": ("LlamaConfig", "LlamaForCausalLM", dict(
        SMALL, max_position_embeddings=128, rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                          "original_max_position_embeddings": 32})),
    "llama-mha-bias": ("LlamaConfig", "LlamaForCausalLM", dict(SMALL, num_key_value_heads=4, attention_bias=True)),
    "qwen2-qkv-bias": ("Qwen2Config", "Qwen2ForCausalLM", SMALL),
    "mistral-sliding": ("MistralConfig", "MistralForCausalLM", dict(SMALL, sliding_window=8, head_dim=16)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        SMALL, num_hidden_layers=6, num_key_value_heads=1, head_dim=32, sliding_window=8,
        query_pre_attn_scalar=32, layer_types=["sliding_attention"] * 5 + ["full_attention"])),
}


def build_pair(case: str) -> tuple[torch.nn.Module, Transformer]:
    config_cls, model_cls, kwargs = CASES[case]
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    with torch.no_grad():  # random norms and biases, so a wrong offset or a dropped bias shows
        for name, p in hf.named_parameters():
            if "norm" in name or "bias" in name:
                p.normal_(0.0 if "gemma" in case else 1.0, 0.3)
    ours = Transformer(ModelConfig.from_hf(hf.config.to_dict() | {"model_type": hf.config.model_type})).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case):
    hf, ours = build_pair(case)
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() <= 1e-4


@pytest.mark.parametrize("case", ["llama3-rope-scaling", "gemma3", "mistral-sliding"])
def test_kv_cache_steps_equal_full_forward(case):
    """A prompt chunk, then one token at a time through the engine's paged cache."""
    from lmstack.generate.engine import Engine, EngineConfig
    from lmstack.generate.runner import Feed

    _, ours = build_pair(case)
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(2))
    engine = Engine(ours, config=EngineConfig(kv_cache_mb=1, block_size=8))
    with torch.no_grad():
        full = ours(ids)
        for row in range(2):
            blocks = [engine.pool.allocate() for _ in range(3)]
            tokens = ids[row].tolist()
            steps = [engine.runner.forward([Feed(blocks, 0, tokens[:11], None, "all", prefill=True)]).values]
            steps += [engine.runner.forward([Feed(blocks, t, [tokens[t]], None, "all")]).values for t in range(11, 20)]
            assert (torch.cat(steps) - full[row]).abs().max() <= 1e-5


def test_left_padding_does_not_change_a_row(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config).eval()
    short = torch.randint(0, 128, (1, 6))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1)
    mask = torch.tensor([[0] * 4 + [1] * 6])
    with torch.no_grad():
        alone = model(short)
        batched = model(padded, attention_mask=mask)
    assert (batched[:, 4:] - alone).abs().max() <= 1e-5


def test_packed_segments_equal_separate_samples(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config).eval()
    a, b = torch.randint(0, 128, (1, 5)), torch.randint(0, 128, (1, 7))
    packed = torch.cat([a, b], dim=1)
    segments = torch.tensor([[1] * 5 + [2] * 7])
    positions = torch.tensor([list(range(5)) + list(range(7))])
    with torch.no_grad():
        together = model(packed, segment_ids=segments, position_ids=positions)
        assert (together[:, :5] - model(a)).abs().max() <= 1e-4
        assert (together[:, 5:] - model(b)).abs().max() <= 1e-4


def test_unsupported_architecture_is_a_clear_error():
    from lmstack.errors import LmstackError

    with pytest.raises(LmstackError, match="unsupported architecture 'gpt_neox'"):
        ModelConfig.from_hf({"model_type": "gpt_neox", "vocab_size": 8})


def test_logits_at_selects_the_same_rows_as_full_logits(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config).eval()
    ids = torch.randint(0, 128, (2, 9))
    at = torch.rand(2, 9) > 0.5
    with torch.no_grad():
        assert (model(ids, logits_at=at) - model(ids)[at]).abs().max() <= 1e-5
