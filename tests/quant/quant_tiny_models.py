"""Tiny models, tokenizers and texts for the quantization tests (built in milliseconds)."""

from __future__ import annotations

import random
from pathlib import Path

import torch


def tiny_tokenizer(vocab_size: int):
    """A word-level tokenizer over `w0 w1 ...`, enough to calibrate and score a tiny model."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    from lmstack.tokenizer import Tokenizer

    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(vocab_size - 3)]
    backend = Backend(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(backend, special_tokens={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})


def word_text(vocab_size: int, words: int, seed: int) -> str:
    """Text the tiny tokenizer reads: a repetitive word sequence (so a model can be calibrated on it)."""
    rng = random.Random(seed)
    return " ".join(f"w{(i * 7 + rng.randrange(3)) % (vocab_size - 3)}" for i in range(words))


def tiny_model(config, seed: int = 0):
    from lmstack.model.transformer import Transformer

    torch.manual_seed(seed)
    model = Transformer(config).eval()
    with torch.no_grad():  # weights of a trained model's scale, with a few outlier input channels
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.05)
        model.model.embed_tokens.weight.normal_(0, 1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight[:3] = 8.0
    return model


def write_tiny_dir(path: Path, config, seed: int = 0) -> Path:
    from lmstack.model import hf_io

    model = tiny_model(config, seed)
    return hf_io.write_model_dir(path, config, model.state_dict(), tiny_tokenizer(config.vocab_size),
                                 {"eos_token_id": 2})
