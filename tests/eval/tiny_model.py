"""A tiny real model on disk (test helper): a byte-level BPE tokenizer with a chat template and a
random Llama, in Hugging Face layout, that `load_model`, transformers and lm-eval all read."""

from __future__ import annotations

from pathlib import Path

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


def write_tiny_model(folder: Path, *, hidden: int = 64, layers: int = 2, context: int = 512, seed: int = 0) -> Path:
    """A random tiny Llama (fp32) with the byte tokenizer, the same for the same arguments."""
    import torch

    from lmstack.model import hf_io
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    config = ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=hidden,
                         intermediate_size=2 * hidden, num_layers=layers, num_heads=4, num_kv_heads=2,
                         head_dim=hidden // 4, max_position_embeddings=context)
    eos = tokenizer.eos_token_id
    return hf_io.write_model_dir(folder, config, Transformer(config).state_dict(), tokenizer,
                                 {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos})
