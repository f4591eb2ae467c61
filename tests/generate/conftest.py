"""A tiny random Llama twice: as transformers' LlamaForCausalLM and as our Transformer, same weights."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy machine extra threads only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_pair():
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    torch.manual_seed(0)
    hf_config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        initializer_range=0.15,  # peaked distributions: argmax ties would make parity flaky
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    hf = LlamaForCausalLM(hf_config).eval()
    ours = Transformer(ModelConfig.from_hf(hf.config.to_dict() | {"model_type": "llama"}))
    ours.load_state_dict(hf.state_dict())
    return ours.eval(), hf


@pytest.fixture
def prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 128, (n,), generator=g).tolist() for n in (5, 9, 2)]


def word_tokenizer():
    """A 128-token word-level tokenizer with ChatML: tiny, readable, and the size of the tiny model."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    from lmstack.tokenizer import Tokenizer

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    words = ["user", "assistant", "system"] + [f"w{i}" for i in range(120)]
    backend = Backend(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(specials)
    return Tokenizer(
        backend, special_tokens={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        add_bos_token=True, chat_template="chatml",
    )


@pytest.fixture(scope="module")
def tiny_loaded(model_pair):
    """What `lmstack.load` returns, for the tiny model: model, tokenizer, config, generation config."""
    from types import SimpleNamespace

    ours, _ = model_pair
    return SimpleNamespace(
        model=ours, tokenizer=word_tokenizer(), config=ours.config, generation_config={}, device=torch.device("cpu")
    )
