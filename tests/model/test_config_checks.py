"""A config.json is checked against its weights before a model is built, naming the key to fix;
`tie_word_embeddings` follows each family's transformers default."""

from __future__ import annotations

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer
from lmstack.model.weights import build_model

HF = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2}


def weights(config: ModelConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return Transformer(config).state_dict()


@pytest.mark.parametrize(("model_type", "tied"), [("llama", False), ("mistral", False), ("qwen2", False),
                                                  ("gemma3_text", True)])
def test_tie_word_embeddings_defaults_like_transformers(model_type, tied):
    from transformers import AutoConfig

    assert ModelConfig.from_hf({**HF, "model_type": model_type}).tie_word_embeddings is tied
    reference = AutoConfig.for_model(model_type, **{k: v for k, v in HF.items() if k != "model_type"})
    assert getattr(reference, "tie_word_embeddings", reference.get_text_config().tie_word_embeddings) is tied


def test_a_checkpoint_with_its_own_head_keeps_it_when_the_config_is_silent():
    config = ModelConfig.from_hf(HF)  # no tie_word_embeddings key: Llama's default is untied
    state = weights(config)
    state["lm_head.weight"] = torch.randn_like(state["lm_head.weight"])
    model = build_model(config, state)
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_a_hidden_size_that_does_not_match_the_weights_names_the_key():
    state = weights(ModelConfig.from_hf(HF))
    wrong = ModelConfig.from_hf({**HF, "hidden_size": 48, "head_dim": 8})
    with pytest.raises(LmstackError, match=r"model.embed_tokens.weight is \[64, 32\].*check hidden_size"):
        build_model(wrong, state)


def test_a_head_count_that_does_not_match_the_weights_names_the_key():
    state = weights(ModelConfig.from_hf(HF))
    wrong = ModelConfig.from_hf({**HF, "num_key_value_heads": 4})
    with pytest.raises(LmstackError, match="check num_key_value_heads x head_dim"):
        build_model(wrong, state)


def test_a_layer_count_that_does_not_match_the_weights_names_the_key():
    state = weights(ModelConfig.from_hf(HF))
    with pytest.raises(LmstackError, match="num_hidden_layers=3, but the weights lack layer 2"):
        build_model(ModelConfig.from_hf({**HF, "num_hidden_layers": 3}), state)
    with pytest.raises(LmstackError, match="more layers than config.json's num_hidden_layers=1"):
        build_model(ModelConfig.from_hf({**HF, "num_hidden_layers": 1}), state)


def test_a_damaged_layer_name_is_named_not_parsed():
    config = ModelConfig.from_hf(HF)
    state = weights(config)
    state["model.layers. .mlp.up_proj.weight"] = state.pop("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(LmstackError, match=r"missing model\.layers\.1\.mlp\.up_proj\.weight; "
                                           r"unexpected model\.layers\. \.mlp\.up_proj\.weight"):
        build_model(config, state)


@pytest.mark.parametrize(("key", "value"), [("num_attention_heads", 0), ("hidden_size", -8), ("vocab_size", "64"),
                                            ("num_hidden_layers", True)])
def test_sizes_must_be_positive_integers(key, value):
    with pytest.raises(LmstackError, match=f"{key} must be a positive integer"):
        ModelConfig.from_hf({**HF, key: value})


def test_a_missing_size_is_named():
    config = {k: v for k, v in HF.items() if k != "intermediate_size"}
    with pytest.raises(LmstackError, match="config.json has no 'intermediate_size'"):
        ModelConfig.from_hf(config)


def test_heads_must_divide():
    with pytest.raises(LmstackError, match="must be a multiple of num_kv_heads"):
        ModelConfig.from_hf({**HF, "num_key_value_heads": 3})
