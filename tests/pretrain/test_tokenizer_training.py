"""Tokenizer training: byte-level BPE that round-trips any text, loads in transformers, and compresses."""

from __future__ import annotations

import json

import pytest

from lmstack.errors import LmstackError
from lmstack.pretrain.tokenizer_training import (MIN_VOCAB_SIZE, SPECIAL_TOKENS, parse_vocab_sizes,
                                                 train_tokenizer)
from lmstack.tokenizer import Tokenizer

UNSEEN = "Grüße aus Köln! 東京 🚀 def f(x):\n\treturn x ** 2  # ünïcödé"


def test_trained_tokenizer_round_trips_any_text_and_has_its_specials(trained_tokenizer):
    tokenizer = Tokenizer.from_dir(trained_tokenizer)
    assert tokenizer.vocab_size == 1000
    assert tokenizer.decode(tokenizer.encode(UNSEEN)) == UNSEEN  # bytes as fallback: nothing is unknown
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3]
    assert tokenizer.eos_token_id == 0 and tokenizer.pad_token_id == 3
    assert tokenizer.encode("<|im_start|>user") == [1] + tokenizer.encode("user")
    assert tokenizer.stop_token_ids == [0, 2]  # <|endoftext|> and <|im_end|>


def test_transformers_loads_it_with_the_same_ids_and_chat_template(trained_tokenizer):
    transformers = pytest.importorskip("transformers")
    ours = Tokenizer.from_dir(trained_tokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(str(trained_tokenizer))
    assert theirs(UNSEEN)["input_ids"] == ours.encode(UNSEEN)
    chat = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    assert theirs.apply_chat_template(chat, tokenize=False) == ours.apply_chat_template(chat)
    assert theirs.eos_token == "<|endoftext|>"


def test_compression_report_and_registry_record(trained_tokenizer, corpus_dir):
    from lmstack import registry

    report = json.loads((trained_tokenizer / "report.json").read_text())
    assert 2.0 < report["bytes_per_token"] < 5.0  # BPE at 1k on code: a few bytes per token
    artifact = registry.find_by_path(trained_tokenizer)
    assert artifact.kind == "tokenizer" and artifact.operation == "tokenizer-train"
    assert artifact.datasets == [str(corpus_dir.resolve())]


def test_vocabulary_study_compresses_more_with_a_larger_vocabulary(corpus_dir, tmp_path):
    sources = sorted(corpus_dir.glob("json_*.py")) + sorted(corpus_dir.glob("email_*.py"))  # ~250 KB
    results = train_tokenizer(sources, tmp_path / "study", parse_vocab_sizes("300,1k,3k"))
    rates = [r.bytes_per_token for r in results]
    assert rates == sorted(rates) and rates[-1] > 1.5 * rates[0]
    assert {p.name for p in (tmp_path / "study").iterdir()} == {"vocab-300", "vocab-1000", "vocab-3000", "study.json",
                                                                 "study.md", "study.png"}
    assert "| 3000 |" in (tmp_path / "study" / "study.md").read_text()


@pytest.mark.parametrize("text, message", [("200", "outside"), ("abc", "not a number"), ("2000000", "outside")])
def test_bad_vocabulary_sizes(text, message):
    with pytest.raises(LmstackError, match=message):
        parse_vocab_sizes(text)


def test_the_smallest_vocabulary_is_the_bytes_plus_specials():
    assert parse_vocab_sizes(f"{MIN_VOCAB_SIZE},1k") == [MIN_VOCAB_SIZE, 1000]
