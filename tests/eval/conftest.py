"""A tiny real model on disk (a byte-level BPE tokenizer with a chat template, a random 2-layer
Llama) that `load_model`, transformers and lm-eval all read, and a fresh lmstack home per test."""

from __future__ import annotations

from pathlib import Path

import pytest

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer():
    """Every byte one token (GPT-2's byte alphabet), plus <|endoftext|>, <|im_start|>, <|im_end|>."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    from lmstack.tokenizer import Tokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    backend = Backend(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    return Tokenizer(backend, special_tokens={"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
                     chat_template=CHATML)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama in Hugging Face layout (fp32), the same for every session."""
    import torch

    from lmstack.model import hf_io
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    config = ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                         num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=512)
    model = Transformer(config)
    eos = tokenizer.eos_token_id
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    return hf_io.write_model_dir(folder, config, model.state_dict(), tokenizer,
                                 {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos})


@pytest.fixture(autouse=True)
def _fresh_home(request: pytest.FixtureRequest) -> None:
    """Registry writes go to a temporary lmstack home (real-model tests keep the shared test home)."""
    if "real" not in request.keywords:
        request.getfixturevalue("lmstack_home")
