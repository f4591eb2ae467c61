"""Tiny random models saved as Hugging Face folders: a base and "fine-tunes" of it (the base plus
small noise), the inputs every merge test works on (helpers; the fixture is in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_tokenizer(vocab_size: int = 128):
    """A word-level tokenizer with tokens t0..tN (EOS t1, BOS t2, not added by encode): the tiny models' vocabulary."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    from lmstack.tokenizer import Tokenizer

    backend = Backend(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(backend, special_tokens={"eos_token": "t1", "bos_token": "t2"}, chat_template="chatml")


def tiny_llama(**changes):
    from lmstack.model.config import ModelConfig

    fields = dict(family="llama", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4,
                  num_kv_heads=2, head_dim=16, max_position_embeddings=256)
    return ModelConfig(**(fields | changes))


def save_model(path: Path, config, state: dict[str, torch.Tensor], dtype=torch.float32) -> str:
    from lmstack.model import hf_io

    hf_io.write_model_dir(path, config, state, tiny_tokenizer(config.vocab_size), {"eos_token_id": 1}, dtype=dtype)
    return str(path)


def random_state(config, seed: int) -> dict[str, torch.Tensor]:
    from lmstack.model.transformer import Transformer

    torch.manual_seed(seed)
    model = Transformer(config)
    with torch.no_grad():  # norms away from 1 so that a mixed-up norm tensor would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return {k: v.clone() for k, v in model.state_dict().items()}


def fine_tune_of(base: dict[str, torch.Tensor], seed: int, scale: float = 0.02) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=generator) for k, v in base.items()}


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    from lmstack.model.hf_io import read_state_dict

    return read_state_dict(Path(folder))
