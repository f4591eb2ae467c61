"""Tiny stand-ins for training tests: a byte-level tokenizer with ChatML specials, a tiny model,
and small chat / preference datasets written to a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SPECIALS = {"<|im_start|>": 256, "<|im_end|>": 257, "<pad>": 258}


class ByteTokenizer:
    """One token per character (Latin-1), plus the ChatML specials as single tokens."""

    bos_token_id = None
    eos_token_id = 257
    pad_token_id = 258
    stop_token_ids = [257]
    chat_template = "chatml"  # rendered by apply_chat_template below
    vocab_size = 260

    def encode_with_offsets(self, text: str, add_special_tokens: bool = True):
        ids, offsets, i = [], [], 0
        while i < len(text):
            special = next((s for s in SPECIALS if text.startswith(s, i)), None)
            if special:
                ids.append(SPECIALS[special])
                offsets.append((i, i + len(special)))
                i += len(special)
            else:
                ids.append(min(ord(text[i]), 255))
                offsets.append((i, i + 1))
                i += 1
        return ids, offsets

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.encode_with_offsets(text)[0]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        names = {v: k for k, v in SPECIALS.items()}
        return "".join(("" if skip_special_tokens else names[i]) if i in names else chr(i) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False, chat_template=None):
        assert chat_template in (None, "chatml")
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n" if add_generation_prompt else ""
        return self.encode(text) if tokenize else text

    def save(self, directory) -> None:
        (Path(directory) / "byte_tokenizer.json").write_text(json.dumps(SPECIALS))


def tiny_model_config():
    from lmstack.model.config import ModelConfig

    return ModelConfig(family="llama", vocab_size=260, hidden_size=64, intermediate_size=128, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=512)


@pytest.fixture
def tiny_bundle(tmp_path: Path):
    """Makes ModelBundles holding a random tiny model (seeded) and the byte tokenizer."""

    def make(seed: int = 0):
        import torch

        from lmstack.hub.load import ModelBundle
        from lmstack.model.transformer import Transformer

        torch.manual_seed(seed)
        config = tiny_model_config()
        return ModelBundle(model=Transformer(config), tokenizer=ByteTokenizer(), config=config,
                           generation_config={"eos_token_id": 257}, path=tmp_path, name="tiny")

    return make


NAMES = ["Ada", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal"]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def chat_file(tmp_path: Path) -> str:
    records = [{"messages": [{"role": "user", "content": f"Who is {n}?"},
                             {"role": "assistant", "content": f"{n} is my friend."}]} for n in NAMES * 2]
    return write_jsonl(tmp_path / "chat.jsonl", records)


@pytest.fixture
def preference_file(tmp_path: Path) -> str:
    records = [{"prompt": f"Greet {n}.", "chosen": f"Hello {n}!", "rejected": "No."} for n in NAMES]
    return write_jsonl(tmp_path / "pairs.jsonl", records)


@pytest.fixture(autouse=True)
def _fresh_home(request: pytest.FixtureRequest) -> None:
    """Registry writes go to a temporary lmstack home (real-model tests keep the shared test home)."""
    if "real" not in request.keywords:
        request.getfixturevalue("lmstack_home")
