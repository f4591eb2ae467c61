"""Our GGUF reader and loader against the `gguf` package and transformers on the real files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.model import gguf_io
from lmstack.formats.gguf_file import read_gguf


@pytest.mark.real
@pytest.mark.parametrize("fixture", ["smollm2_gguf", "gemma3_gguf"])
def test_reader_agrees_with_the_gguf_package(fixture, request):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = request.getfixturevalue(fixture)
    ours, reference = read_gguf(path), GGUFReader(path)
    assert ours.metadata["general.architecture"] == reference.fields["general.architecture"].contents()
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == len(reference.fields["tokenizer.ggml.tokens"].data)
    assert [t.name for t in ours.tensors] == [t.name for t in reference.tensors]
    by_name = {t.name: t for t in reference.tensors}
    for info in ours.tensors[:12]:  # every kind of tensor type appears in the first blocks
        ref = by_name[info.name]
        assert info.shape == tuple(int(d) for d in reversed(ref.shape))
        expected = dequantize(ref.data, ref.tensor_type).reshape(info.shape)
        np.testing.assert_array_equal(ours.tensor(info), expected)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path, smollm2_gguf):
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smollm2_gguf.read_bytes()[:5_000_000])
    with pytest.raises(LmstackError, match="truncated"):
        read_gguf(truncated)
    foreign = tmp_path / "model.gguf"
    foreign.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(LmstackError, match="not a GGUF file"):
        read_gguf(foreign)
    with pytest.raises(LmstackError, match="does not exist"):
        read_gguf(tmp_path / "missing.gguf")


def _hf_from_gguf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Émile a mangé 3 crêpes 🥞 et", "1, 2, 3, 5, 8,"]


@pytest.mark.real
@pytest.mark.parametrize("fixture", ["smollm2_gguf", "gemma3_gguf"])
def test_logits_and_greedy_text_match_transformers(fixture, request):
    """Same dequantized weights: logits within 1e-4 in fp32, 64 greedy tokens identical."""
    import lmstack
    from lmstack.generate.generate import generate_ids
    from lmstack.generate.processors import SamplingConfig

    path = request.getfixturevalue(fixture)
    ours = lmstack.load(path, device="cpu", dtype="fp32")
    hf = _hf_from_gguf(path)
    for prompt in PROMPTS:
        ids = torch.tensor([ours.tokenizer.encode(prompt)])
        with torch.no_grad():
            assert (hf(ids).logits - ours.model(ids)).abs().max() <= 1e-4, prompt
    ids = ours.tokenizer.encode("Once upon a time, in a small village by the sea, there lived")
    eos = ours.tokenizer.eos_token_id
    new = generate_ids(ours.model, [ids], sampling=SamplingConfig(temperature=0.0), max_new_tokens=64,
                       stop_token_ids=[eos])[0]
    with torch.no_grad():
        reference = hf.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id=eos)
    assert new == reference[0, len(ids):].tolist()
    assert len(new) == 64


@pytest.mark.real
def test_exported_directory_loads_in_transformers_with_same_logits(smollm2_gguf, tmp_path):
    import lmstack
    from lmstack import registry
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = lmstack.load(smollm2_gguf, device="cpu", dtype="fp32")
    out = ours.save(tmp_path / "export", format="hf")
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        assert (out / name).is_file(), name
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        ours.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = torch.tensor([tok("The capital of France is").input_ids])
    with torch.no_grad():
        assert (hf(ids).logits - ours.model(ids)).abs().max() <= 1e-4
    assert registry.find_by_path(out).operation == "export"


def test_unsupported_gguf_architecture(tmp_path):
    from lmstack.formats.gguf_file import GGUFFile

    fake = GGUFFile(tmp_path / "x.gguf", 3, {"general.architecture": "rwkv6"}, [], 0)
    with pytest.raises(LmstackError, match="unsupported architecture 'rwkv6'"):
        gguf_io.config_from_gguf(fake)
