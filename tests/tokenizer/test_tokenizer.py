"""Our tokenizer against transformers on the same files: ids, offsets, decoding, chat text, saving."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstack.errors import LmstackError
from lmstack.tokenizer import TEMPLATES, IncrementalDecoder, Tokenizer, render_chat
from lmstack.formats.gguf_file import read_gguf
from lmstack.tokenizer.gguf_vocab import byte_to_char

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

TEXTS = [
    "Hello world",
    "",
    " leading space",
    "   three leading spaces",
    "Café naïve résumé Ångström Ærø",
    "日本語のテキスト、中文字符。한국어 텍스트",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "def f(x):\n    return x  # comment\n\tif x:\n\t\tpass\n",
    "a  b   c\t\td\n\n\ne \r\n f",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nhello<end_of_turn>\n<bos>text<eos>",
    "1234567890 3.14159 1,000,000 2024-01-01",
    "won't they'll I'M y'all",
    "\u00a0non-breaking\u200bzero-width",
    "trailing spaces   ",
    "\n",
]

CONVERSATION = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke about 日本 😀"},
]
SYSTEM = {"role": "system", "content": "You are terse."}


@pytest.fixture(scope="module")
def smollm2_tokenizers(smollm2_gguf: Path):
    """(ours, transformers') tokenizers for SmolLM2, loaded once."""
    reference = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    return Tokenizer.from_gguf(smollm2_gguf), reference


@pytest.fixture(scope="module")
def gemma3(gemma3_gguf: Path):
    """(ours, transformers') tokenizers for Gemma 3, loaded once."""
    reference = transformers.AutoTokenizer.from_pretrained(str(gemma3_gguf.parent), gguf_file=gemma3_gguf.name)
    return Tokenizer.from_gguf(gemma3_gguf), reference


@pytest.fixture(params=["smollm2_tokenizers", "gemma3"])
def pair(request):
    return request.getfixturevalue(request.param)


# --- real models ---------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_ids_match_transformers(pair, add_special_tokens):
    ours, reference = pair
    for text in TEXTS:
        expected = reference.encode(text, add_special_tokens=add_special_tokens)
        assert ours.encode(text, add_special_tokens) == expected, text


@pytest.mark.real
def test_offsets_match_transformers(pair):
    ours, reference = pair
    for text in TEXTS:
        ids, offsets = ours.encode_with_offsets(text)
        expected = reference(text, return_offsets_mapping=True)
        assert ids == expected["input_ids"]
        assert offsets == [tuple(span) for span in expected["offset_mapping"]], text


@pytest.mark.real
def test_decode_round_trips_and_matches_transformers(pair):
    ours, reference = pair
    for text in TEXTS:
        ids = ours.encode(text, add_special_tokens=False)
        assert ours.decode(ids) == text
        with_specials = ours.encode(text)
        for skip in (False, True):
            assert ours.decode(with_specials, skip) == reference.decode(with_specials, skip_special_tokens=skip)


@pytest.mark.real
def test_special_tokens_match_transformers(pair):
    ours, reference = pair
    assert ours.vocab_size == len(reference)
    assert ours.bos_token_id == reference.bos_token_id
    assert ours.eos_token_id == reference.eos_token_id
    assert ours.pad_token_id == reference.pad_token_id
    ids = ours.encode("a b <|im_end|>")
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)


@pytest.mark.real
def test_stop_token_ids(smollm2_tokenizers, gemma3):
    smol, _ = smollm2_tokenizers
    gemma, _ = gemma3
    assert smol.stop_token_ids == [smol.token_to_id("<|im_end|>"), smol.token_to_id("<|endoftext|>")]
    assert gemma.stop_token_ids == [gemma.token_to_id("<eos>"), gemma.token_to_id("<end_of_turn>")]


@pytest.mark.real
@pytest.mark.parametrize("with_system", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_smollm2_chat_template_matches_transformers(smollm2_tokenizers, with_system, add_generation_prompt):
    ours, reference = smollm2_tokenizers
    messages = [SYSTEM, *CONVERSATION] if with_system else CONVERSATION
    text = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    expected = reference.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert text == expected
    ids = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    assert ids == reference.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    assert text.endswith("<|im_start|>assistant\n") == add_generation_prompt


@pytest.mark.real
def test_model_without_template_raises(gemma3):
    gemma, _ = gemma3
    assert gemma.chat_template is None
    with pytest.raises(LmstackError, match="no chat template"):
        gemma.apply_chat_template(CONVERSATION)


@pytest.mark.real
def test_gemma_template_by_name_tokenizes_like_transformers(gemma3):
    gemma, reference = gemma3
    ids = gemma.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True, chat_template="gemma")
    expected = reference.apply_chat_template(
        CONVERSATION, chat_template=TEMPLATES["gemma"], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert ids == expected
    assert ids.count(gemma.bos_token_id) == 1  # the template writes BOS; encoding adds no second one


@pytest.mark.real
def test_saved_smollm2_loads_in_transformers(smollm2_tokenizers, tmp_path):
    ours, _ = smollm2_tokenizers
    ours.save(tmp_path)
    written = {path.name for path in tmp_path.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= written
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS:
        assert loaded.encode(text) == ours.encode(text), text
    for add_generation_prompt in (False, True):
        assert loaded.apply_chat_template(
            CONVERSATION, add_generation_prompt=add_generation_prompt, tokenize=False
        ) == ours.apply_chat_template(CONVERSATION, add_generation_prompt=add_generation_prompt)
    again = Tokenizer.from_dir(tmp_path)
    assert again.chat_template == ours.chat_template
    assert [again.encode(text) for text in TEXTS] == [ours.encode(text) for text in TEXTS]
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(again, name) == getattr(ours, name)


@pytest.mark.real
def test_saved_gemma3_keeps_bos_and_template(gemma3, tmp_path):
    ours, _ = gemma3
    ours.chat_template = "gemma"
    try:
        ours.save(tmp_path)
    finally:
        ours.chat_template = None
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS:
        assert loaded.encode(text) == ours.encode(text), text
    assert loaded.apply_chat_template(CONVERSATION, tokenize=False) == render_chat(
        "gemma", CONVERSATION, bos_token="<bos>"
    )
    again = Tokenizer.from_dir(tmp_path)
    assert again.encode("hi") == [ours.bos_token_id, *ours.encode("hi", add_special_tokens=False)]


@pytest.mark.real
def test_from_dir_reads_chat_template_jinja(smollm2_tokenizers, tmp_path):
    _, reference = smollm2_tokenizers
    reference.save_pretrained(tmp_path)  # transformers 5 writes the template to chat_template.jinja
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.chat_template == reference.chat_template
    assert loaded.encode("Hello <|im_end|>") == reference.encode("Hello <|im_end|>")


@pytest.mark.real
@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_incremental_decoder_streams_full_text(pair, skip_special_tokens):
    ours, _ = pair
    text = "<|im_start|>Streaming 😀👍🏽 日本語のテキスト café\n  done 👨‍👩‍👧 🇫🇷<end_of_turn>"
    ids = ours.encode(text)
    decoder = IncrementalDecoder(ours, skip_special_tokens=skip_special_tokens)
    pieces = [decoder.push(token_id) for token_id in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == ours.decode(ids, skip_special_tokens)
    assert not any("\ufffd" in piece for piece in pieces)  # never half a character
    assert sum(1 for piece in pieces if piece) > 5  # it really streams


@pytest.mark.real
@pytest.mark.parametrize("family", ["llama-bpe", "qwen2"])
def test_byte_level_split_families_match_transformers(smollm2_gguf, tmp_path, family):
    """SmolLM2's vocabulary re-labelled with another family's split regex."""
    metadata = read_gguf(smollm2_gguf).metadata
    path = tmp_path / "relabelled.gguf"
    _write_gguf(
        path,
        model="gpt2",
        pre=family,
        tokens=metadata["tokenizer.ggml.tokens"],
        token_types=metadata["tokenizer.ggml.token_type"],
        merges=metadata["tokenizer.ggml.merges"],
        bos=1,
        eos=2,
    )
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    ours = Tokenizer.from_gguf(path)
    for text in TEXTS:
        assert ours.encode(text) == reference.encode(text), text


# --- synthetic GGUF files (no real model needed) -------------------------------------------


def _write_gguf(path: Path, *, model: str, tokens: list[str], token_types: list[int], bos: int, eos: int,
                pre: str | None = None, merges: list[str] | None = None, scores: list[float] | None = None,
                unk: int | None = None) -> None:
    """A minimal llama-architecture GGUF: tokenizer metadata, config keys and one tensor."""
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    if scores is not None:
        writer.add_token_scores(scores)
    if merges is not None:
        writer.add_token_merges(merges)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    if unk is not None:
        writer.add_unk_token_id(unk)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_sentencepiece_gguf(path: Path) -> None:
    """A Llama-2-style vocabulary: <unk>/<s>/</s>, 256 byte tokens, pieces ranked by score."""
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "t", "▁h", "ll", "▁he", "▁hell", "▁hello",
              "▁w", "or", "▁wor", "ld", "▁world", "lo", "▁t", "he", "▁the", "▁▁"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)] + pieces
    scores = [0.0] * 259 + [-float(rank) for rank in range(len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    _write_gguf(path, model="llama", tokens=tokens, token_types=types, scores=scores, bos=1, eos=2, unk=0)


def test_sentencepiece_vocab_matches_transformers(tmp_path):
    path = tmp_path / "spm.gguf"
    _write_sentencepiece_gguf(path)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    ours = Tokenizer.from_gguf(path)
    texts = ["hello world", " hello", "the hello  world 😀", "", "héllo</s>x", "   ", "<s>the"]
    for text in texts:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ours.decode(ids) == reference.decode(ids)
    assert ours.encode("hello")[0] == ours.bos_token_id == 1  # SentencePiece vocabularies add BOS by default
    assert ours.decode(ours.encode("😀", add_special_tokens=False)) == "😀"  # byte fallback


def test_incremental_decoder_joins_byte_fallback_tokens(tmp_path):
    path = tmp_path / "spm.gguf"
    _write_sentencepiece_gguf(path)
    tokenizer = Tokenizer.from_gguf(path)
    ids = tokenizer.encode("hello 😀 日本", add_special_tokens=False)
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(token_id) for token_id in ids]
    assert "".join(pieces) + decoder.flush() == "hello 😀 日本"
    assert "😀" in pieces and "" in pieces  # emitted whole, after waiting for its four byte tokens


def test_unknown_pre_tokenizer_raises(tmp_path):
    path = tmp_path / "odd.gguf"
    alphabet = list(byte_to_char().values())
    _write_gguf(
        path, model="gpt2", pre="no-such-family", tokens=alphabet, token_types=[1] * 256, merges=[], bos=0, eos=0
    )
    with pytest.raises(LmstackError, match="no-such-family"):
        Tokenizer.from_gguf(path)


def test_not_a_gguf_raises(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(LmstackError, match="not a GGUF"):
        Tokenizer.from_gguf(path)
    with pytest.raises(LmstackError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


# --- named templates -----------------------------------------------------------------------


def test_named_templates_render_expected_text():
    messages = [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    specials = {"bos_token": "<s>", "eos_token": "</s>"}
    assert render_chat("chatml", messages, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat("alpaca", messages, add_generation_prompt=False, **specials) == (
        "You are terse.\n\n### Instruction:\nHi\n\n### Response:\nHello</s>\n\n"
    )
    assert render_chat("llama3", messages, add_generation_prompt=True, **specials) == (
        "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert render_chat("gemma", messages, add_generation_prompt=True, **specials) == (
        "<s><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>model\n"
    )


def test_render_matches_transformers_environment():
    """tojson without HTML escaping, raise_exception, extra variables like `tools`, loop controls."""
    from transformers.utils.chat_template_utils import render_jinja_template

    template = (
        "{% if tools %}{{ tools | tojson }}\n{% endif %}"
        "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
        "{% if m.role == 'bad' %}{{ raise_exception('bad role') }}{% endif %}"
        "  {{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if tools is defined and tools is none %}no tools{% endif %}"
    )
    messages = [{"role": "user", "content": "<b>&'x'</b>"}, {"role": "skip", "content": "hidden"}]
    tools = [{"name": "search", "description": "<web> & more"}]
    for extra in ({"tools": tools}, {}):
        expected, _ = render_jinja_template([messages], chat_template=template, **extra)
        assert render_chat(template, messages, **extra) == expected[0]
    with pytest.raises(LmstackError, match="bad role"):
        render_chat(template, [{"role": "bad", "content": ""}])
    with pytest.raises(LmstackError, match="unknown chat template"):
        render_chat("no-such-template", messages)
