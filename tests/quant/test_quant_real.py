"""Quantization and GGUF export of the real default model, checked against the real peer,
llama.cpp (through llama-cpp-python, skipped only when that extra is not installed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.real

TEXT_REF = "lmstack:general_heldout"


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def smollm2_exports(tmp_path_factory, smollm2_gguf):
    """Our F32 and round-to-nearest Q4_0 exports of SmolLM2, and the held-out windows."""
    from lmstack.quant.gguf_export import export_gguf

    out = tmp_path_factory.mktemp("gguf")
    exports = {e.type: e.path for e in export_gguf(str(smollm2_gguf), out, ["f32", "q4_0"])}
    return exports


def _windows(bundle) -> list[list[int]]:
    from lmstack.data import dataset_path
    from lmstack.inputs import read_text
    from lmstack.quant.quality import text_windows

    return text_windows(bundle.tokenizer.encode(read_text(dataset_path(TEXT_REF))), 512)


def _lmstack_perplexity(path, reference) -> float:
    """lmstack's perplexity of a GGUF (the reference model itself when `path` is None)."""
    from lmstack.data import dataset_path
    from lmstack.hub.load import load_model
    from lmstack.inputs import read_text
    from lmstack.quant.quality import nll_and_kl

    candidates = [] if path is None else [load_model(path, device="cpu", dtype="fp32")]
    perplexities, _ = nll_and_kl(reference, candidates, read_text(dataset_path(TEXT_REF)))
    return perplexities[-1]


def _tensor_bytes(path) -> dict[str, tuple[int, bytes]]:
    from lmstack.formats.gguf_file import read_gguf

    gguf = read_gguf(path)
    data = path.read_bytes()
    return {t.name: (t.ggml_type, data[gguf.data_start + t.offset : gguf.data_start + t.offset + t.nbytes])
            for t in gguf.tensors}


def test_llama_cpp_scores_our_exports_as_we_do_and_its_quantizer_writes_our_bytes(
        llama_cpp, smollm2, smollm2_exports, tmp_path, scratch_home):
    from lmstack.quant import llama_cpp_peer

    windows = _windows(smollm2)
    # F32: llama.cpp scores our file as lmstack scores the model it came from
    f32 = llama_cpp_peer.perplexity(smollm2_exports["f32"], windows, threads=2)
    assert f32 == pytest.approx(_lmstack_perplexity(None, smollm2), rel=0.01)
    # llama.cpp's own quantizer, from our F32 file, writes the very bytes our round-to-nearest wrote
    theirs = tmp_path / "llama-q4_0.gguf"
    llama_cpp_peer.quantize(smollm2_exports["f32"], theirs, "q4_0")
    assert _tensor_bytes(theirs) == _tensor_bytes(smollm2_exports["q4_0"])
    # the same perplexity from both engines on those quantized weights, and a GGUF llama.cpp
    # quantized loads in lmstack
    q4 = llama_cpp_peer.perplexity(smollm2_exports["q4_0"], windows, threads=2)
    assert _lmstack_perplexity(theirs, smollm2) == pytest.approx(q4, rel=0.01)


def test_llama_cpp_continues_our_f32_export_greedily_as_lmstack(llama_cpp, smollm2, smollm2_exports):
    from lmstack.generate.generate import generate_ids
    from lmstack.quant import llama_cpp_peer

    prompt = smollm2.tokenizer.apply_chat_template([{"role": "user", "content": "Name a large ocean."}],
                                                   add_generation_prompt=True, tokenize=True)
    ours = generate_ids(smollm2.model, [prompt], max_new_tokens=12)[0]
    llm = llama_cpp_peer.load(smollm2_exports["f32"], 512, threads=2)
    llm.eval(prompt)
    theirs = []
    for _ in range(12):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        theirs.append(token)
        llm.eval([token])
    assert theirs == ours[: len(theirs)]
    assert llm.metadata["tokenizer.chat_template"] == smollm2.tokenizer.chat_template


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory, smollm2_gguf):
    """Random weights in a small Llama that shares SmolLM2's tokenizer (and says it descends from
    its GGUF): rows of 256 and 512 so every K format applies, and exports take a second."""
    from lmstack.model import hf_io
    from lmstack.model.config import ModelConfig
    from lmstack.tokenizer import Tokenizer

    from quant_tiny_models import tiny_model

    tokenizer = Tokenizer.from_gguf(smollm2_gguf)
    config = ModelConfig(family="llama", vocab_size=49152, hidden_size=256, intermediate_size=512, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=64, max_position_embeddings=512)
    source = json.dumps({"gguf": str(smollm2_gguf)})
    return hf_io.write_model_dir(tmp_path_factory.mktemp("small") / "small", config, tiny_model(config).state_dict(),
                                 tokenizer, {}, extra_files={"lmstack_source.json": source})


def test_every_exported_type_loads_in_llama_cpp_and_q8_0_is_the_reference_bytes(llama_cpp, small_model_dir,
                                                                                tmp_path):
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    from lmstack.hub.load import load_model
    from lmstack.model.gguf_io import gguf_name, to_gguf_layout
    from lmstack.quant import llama_cpp_peer
    from lmstack.quant.gguf_export import FILE_TYPES, export_gguf

    exports = export_gguf(str(small_model_dir), tmp_path, list(FILE_TYPES))
    prompt = load_model(small_model_dir, device="cpu").tokenizer.encode("The sky is blue because")
    for export in exports:
        llm = llama_cpp_peer.load(export.path, 64, threads=2)
        llm.eval(prompt)
        assert np.isfinite(llm.scores[: len(prompt)]).all(), export.type
        assert llm.metadata["general.architecture"] == "llama"
        del llm
    q8 = next(e for e in exports if e.type == "q8_0").path
    stored = _tensor_bytes(q8)
    model = load_model(small_model_dir, device="cpu", dtype="fp32")
    for name, weight in model.model.state_dict().items():
        if weight.dim() == 2 and name != "lm_head.weight":
            reference = quantize(to_gguf_layout(name, weight.numpy(), model.config), T.Q8_0)
            assert stored[gguf_name(name, "llama")] == (T.Q8_0, reference.tobytes()), name
    mixes = {e.type: e.tensor_types for e in exports}
    assert mixes["q4_k_m"] == {"Q4_K": 12, "Q6_K": 3, "F32": 5}  # layer 1 of 2 gets more bits
    assert mixes["q6_k"] == {"Q6_K": 15, "F32": 5}


def test_quantized_smollm2_reloads_and_runs_in_chat_and_eval(tmp_path, smollm2_gguf):
    from lmstack import registry
    from lmstack.api import load
    from lmstack.eval.likelihood import evaluate_perplexity
    from lmstack.quant.run import quantize

    result = quantize(str(smollm2_gguf), tmp_path / "int4", method="int4", search=0, eval_text=TEXT_REF,
                      decode_tokens=16)
    reference, quantized = result.quality
    assert quantized.size_bytes < 0.2 * reference.size_bytes
    assert quantized.perplexity < 1.03 * reference.perplexity and quantized.kl < 0.02
    assert registry.get(result.registry_id).parents == [registry.find_by_path(smollm2_gguf).id]
    model = load(result.path, dtype="fp32")
    answer = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=16)
    assert "Paris" in answer.text
    strided = evaluate_perplexity(str(result.path), TEXT_REF, dtype="fp32").perplexity  # `lmstack eval`
    assert strided == pytest.approx(evaluate_perplexity(str(smollm2_gguf), TEXT_REF, dtype="fp32").perplexity,
                                    rel=0.03)
    with torch.no_grad():
        assert model.model.lm_head.qweight.dtype == torch.int8  # the head reads int8, the rest 4-bit
