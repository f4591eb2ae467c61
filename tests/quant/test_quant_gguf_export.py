"""GGUF export on tiny models: llama.cpp's tensor-type rules, files lmstack reads back to the same
weights, the tokenizer carried along. (The real peer, llama.cpp, is in test_quant_real.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest
from gguf import GGMLQuantizationType as T

from lmstack.errors import LmstackError
from lmstack.quant.gguf_export import check_types, export_gguf, tensor_type

from quant_tiny_models import tiny_model, word_text


def test_tensor_types_follow_llama_cpp(tiny_config):
    smollm2 = replace(tiny_config, hidden_size=576, intermediate_size=1536, num_layers=30, layer_types=[])
    assert tensor_type("q4_0", "model.layers.0.mlp.up_proj.weight", (1536, 576), smollm2) == T.Q4_0
    assert tensor_type("q4_0", "model.layers.0.input_layernorm.weight", (576,), smollm2) == T.F32
    # the tied embedding is the output head: Q6_K, or Q8_0 when rows are not a multiple of 256
    assert tensor_type("q4_0", "model.embed_tokens.weight", (49152, 576), smollm2) == T.Q8_0
    assert tensor_type("q4_0", "model.embed_tokens.weight", (49152, 512), smollm2) == T.Q6_K
    assert tensor_type("q8_0", "model.embed_tokens.weight", (49152, 512), smollm2) == T.Q8_0
    # K formats fall back per tensor; down_proj's 1536-wide rows take Q4_K, the 576-wide ones do not
    assert tensor_type("q4_k_s", "model.layers.9.mlp.up_proj.weight", (1536, 576), smollm2) == T.Q5_0
    assert tensor_type("q4_k_s", "model.layers.9.mlp.down_proj.weight", (576, 1536), smollm2) == T.Q4_K
    # Q4_K_M gives more bits to attn_v/ffn_down in the first and last eighth and every third layer
    assert tensor_type("q4_k_m", "model.layers.0.mlp.down_proj.weight", (576, 1536), smollm2) == T.Q6_K
    assert tensor_type("q4_k_m", "model.layers.5.mlp.down_proj.weight", (576, 1536), smollm2) == T.Q6_K
    assert tensor_type("q4_k_m", "model.layers.4.mlp.down_proj.weight", (576, 1536), smollm2) == T.Q4_K
    assert tensor_type("q4_k_m", "model.layers.26.mlp.down_proj.weight", (576, 1536), smollm2) == T.Q6_K
    assert tensor_type("q4_k_m", "model.layers.0.self_attn.v_proj.weight", (192, 576), smollm2) == T.Q8_0
    assert tensor_type("f16", "model.layers.0.mlp.up_proj.weight", (1536, 576), smollm2) == T.F16
    with pytest.raises(LmstackError, match="unknown GGUF type 'q3_x'"):
        check_types(["q8_0", "q3_x"])


@pytest.fixture
def bpe_model_dir(tmp_path):
    """A tiny Llama with a byte-level BPE tokenizer trained here (no GGUF ancestor to copy from)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from lmstack.model import hf_io
    from lmstack.model.config import ModelConfig
    from lmstack.tokenizer import Tokenizer

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 50 + [word_text(200, 400, 3)])
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([text], trainer)
    tokenizer = Tokenizer(backend, special_tokens={"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
                          chat_template="chatml")
    config = ModelConfig(family="llama", vocab_size=backend.get_vocab_size(), hidden_size=256,
                         intermediate_size=512, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=64)
    model = tiny_model(config)
    return hf_io.write_model_dir(tmp_path / "bpe-tiny", config, model.state_dict(), tokenizer, {"eos_token_id": 0})


@pytest.mark.parametrize("file_type", ["f16", "q8_0", "q4_0", "q5_1", "q4_k_m", "q6_k"])
def test_exported_gguf_reads_back_as_the_quantized_weights(tmp_path, bpe_model_dir, file_type, scratch_home):
    from lmstack.formats.gguf_file import read_gguf
    from lmstack.hub.load import load_model

    (export,) = export_gguf(str(bpe_model_dir), tmp_path / "out", [file_type])
    assert export.path.name == f"bpe-tiny-{file_type}.gguf"
    original = load_model(bpe_model_dir, device="cpu", dtype="fp32")
    exported = load_model(export.path, device="cpu", dtype="fp32")
    meta = read_gguf(export.path).metadata
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 2
    assert meta["tokenizer.ggml.model"] == "gpt2" and "<|im_start|>" in meta["tokenizer.chat_template"]
    text = "the lazy dog jumps over the quick brown fox"
    assert exported.tokenizer.encode(text) == original.tokenizer.encode(text)
    tolerance = {"f16": 1e-3, "q8_0": 0.01, "q6_k": 0.03}.get(file_type, 0.15)
    for name, weight in original.model.state_dict().items():
        restored = exported.model.state_dict()[name]
        assert (restored - weight).norm() <= tolerance * weight.norm(), name


def test_export_refuses_before_loading_and_records_lineage(tmp_path, bpe_model_dir):
    from lmstack import registry

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(LmstackError, match="not empty"):
        export_gguf(str(bpe_model_dir), tmp_path / "busy", ["q8_0"])
    with pytest.raises(LmstackError, match="unknown GGUF export method"):
        export_gguf(str(bpe_model_dir), tmp_path / "out", ["q8_0"], method="magic")
    (export,) = export_gguf(str(bpe_model_dir), tmp_path / "out", ["q4_0"], method="gptq",
                            calib="lmstack:general_calibration", samples=2, seq_len=64)
    artifact = registry.get(export.registry_id)
    assert artifact.operation == "export-gguf" and artifact.recipe["method"] == "gptq"
    assert artifact.parents == [registry.find_by_path(bpe_model_dir).id]
    assert artifact.datasets == ["lmstack:general_calibration"]
    assert export.tensor_types == {"Q4_0": 14, "Q6_K": 1, "F32": 5}  # 7 linears x 2 layers, the tied head
