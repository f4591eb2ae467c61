"""Shared fixtures: the real models, a fresh lmstack home, tiny configs.

Tests never touch the user's lmstack home or registry. The session runs in a test home that
persists between runs (`$LMSTACK_TEST_HOME`, default ~/.cache/lmstack-tests), so real models are
pulled and converted once, and it records into a registry of its own that lives for the session
(`$LMSTACK_REGISTRY`); a test that needs an empty home and registry takes `lmstack_home`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before torch loads OpenMP: idle threads sleep instead of spinning, so the suite keeps its speed on a
# machine where other work competes for the cores (spinning threads slow everything 10-50x there).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["LMSTACK_HOME"] = os.environ.get("LMSTACK_TEST_HOME", str(Path.home() / ".cache" / "lmstack-tests"))
os.environ["LMSTACK_REGISTRY"] = str(Path(tempfile.mkdtemp(prefix="lmstack-test-registry-")) / "registry.db")


@pytest.fixture
def lmstack_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lmstack-home"
    monkeypatch.setenv("LMSTACK_HOME", str(home))
    monkeypatch.setenv("LMSTACK_REGISTRY", str(home / "registry.db"))
    return home


def _pull(name: str) -> Path:
    from lmstack.hub import pull

    return pull(name)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return _pull("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    return _pull("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf):
    """The default model loaded once per session, in fp32 (the precision of parity tests), on the CPU.

    Shared by every real-model test that only reads it; a test that changes the model loads its own.
    """
    from lmstack.hub.load import load_model

    return load_model(smollm2_gguf, device="cpu", dtype="fp32")


@pytest.fixture
def tiny_config():
    """A Llama-style config small enough that a model builds and runs in milliseconds."""
    from lmstack.model.config import ModelConfig

    return ModelConfig(
        family="llama", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=256,
    )


TINY_VOCAB = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "a", "b", "c", "d", "Ġ", "ab", "cd", "Ġa", "Ġb", "abcd",
              "user", "assistant", "system", "Ċ", "ĠĠ", "e"]


def write_tiny_gguf(path: Path) -> Path:
    """A complete one-layer llama GGUF with a 20-token byte-level vocabulary and a ChatML template,
    written by the gguf package (llama.cpp's own writer)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_block_count, 1), (writer.add_embedding_length, 8),
                       (writer.add_feed_forward_length, 16), (writer.add_head_count, 2), (writer.add_head_count_kv, 1),
                       (writer.add_context_length, 64), (writer.add_layer_norm_rms_eps, 1e-5)):
        add(value)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TINY_VOCAB)
    writer.add_token_types([3, 3, 3, 3] + [1] * (len(TINY_VOCAB) - 4))
    writer.add_token_merges(["a b", "c d", "Ġ a", "Ġ b", "ab cd", "Ġ Ġ"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(3)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rng = np.random.default_rng(0)
    vocab = len(TINY_VOCAB)
    shapes = {"token_embd.weight": (vocab, 8), "output_norm.weight": (8,), "blk.0.attn_norm.weight": (8,),
              "blk.0.attn_q.weight": (8, 8), "blk.0.attn_k.weight": (4, 8), "blk.0.attn_v.weight": (4, 8),
              "blk.0.attn_output.weight": (8, 8), "blk.0.ffn_norm.weight": (8,),
              "blk.0.ffn_gate.weight": (16, 8), "blk.0.ffn_up.weight": (16, 8), "blk.0.ffn_down.weight": (8, 16)}
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny but complete GGUF model file (loads, tokenizes, chats, generates in milliseconds)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_gguf) -> Path:
    """The tiny GGUF converted to a Hugging Face model directory (config.json, safetensors, tokenizer)."""
    from lmstack.hub.load import converted_dir

    return converted_dir(tiny_gguf)
