"""The corpus pipeline: documents from any source, cleaned and deduplicated, tokenized into shards
that read back exactly, window by window, without loading the corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.pretrain.corpus import CorpusStats, clean_documents, documents
from lmstack.pretrain.shards import TokenWindows, read_index, unigram_perplexity, write_shards
from lmstack.tokenizer import Tokenizer

PROSE = ("The committee met on Tuesday to discuss the budget for the coming year, and it agreed "
         "that the library should stay open in the evenings so that students can work there. ")


def test_documents_from_text_jsonl_parquet_and_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "second"}) + "\n" + json.dumps({"text": "third"}) + "\n")
    pq.write_table(pa.table({"text": ["fourth"]}), tmp_path / "c.parquet")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")  # not a text suffix: never read
    (tmp_path / "bad.txt").write_bytes(b"\x00\x00binary")  # a text suffix but binary: skipped, counted
    stats = CorpusStats()
    assert list(documents([tmp_path], stats)) == ["first document", "second", "third", "fourth"]
    assert stats.dropped["not_text"] == 1
    with pytest.raises(LmstackError, match="looks binary"):  # named directly: an error
        list(documents([tmp_path / "bad.txt"]))


def test_cleaning_drops_rule_breakers_and_near_duplicates(tmp_path):
    from lmstack.data.filters import FilterRules

    texts = {"keep.txt": PROSE * 3, "copy.txt": PROSE * 3 + "Thanks.", "short.txt": "too short",
             "symbols.txt": "#$%^&*()!@" * 40 + " word " * 5, "other.txt": PROSE.replace("library", "pool") * 3 +
             "A different ending, with several new words that change the shingles quite a lot indeed."}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    stats = CorpusStats()
    kept = list(clean_documents([tmp_path], rules=FilterRules(), threshold=0.7, stats=stats))
    # files are read in sorted order: copy.txt comes first and stays, keep.txt is its near-duplicate
    assert kept == [texts["copy.txt"], texts["other.txt"]]
    assert stats.dropped == {"too_short": 1, "symbols": 1, "duplicate": 1}


def test_shards_read_back_exactly_across_shard_boundaries(trained_tokenizer, tmp_path):
    tokenizer = Tokenizer.from_dir(trained_tokenizer)
    texts = [f"document number {i}: " + PROSE[: 40 + 7 * i] for i in range(30)]
    folder = write_shards(texts, tokenizer, tmp_path / "shards", shard_tokens=300)
    index = read_index(folder)
    stream = [t for text in texts for t in tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]]
    assert len(index["shards"]) > 2 and index["tokens"] == len(stream) and index["dtype"] == "uint16"
    windows = TokenWindows(folder, seq_len=16)
    # Rebuild each shard's stream from its windows (they overlap by one token) and compare.
    rebuilt, offset = [], 0
    for shard, start in zip(index["shards"], windows.cumulative):
        count = (shard["tokens"] - 1) // 16
        got = [windows[start + i] for i in range(count)]
        assert all(len(w) == 17 for w in got)
        expected = stream[offset:offset + shard["tokens"]]
        for i, window in enumerate(got):
            assert window.tolist() == expected[i * 16:i * 16 + 17]
        offset += shard["tokens"]
        rebuilt.append(count)
    assert len(windows) == sum(rebuilt)
    assert windows[0:3][2].tolist() == windows[2].tolist()  # slices, as the trainer's evaluation takes them


def test_split_token_counts_and_the_unigram_baseline(trained_tokenizer, tmp_path):
    tokenizer = Tokenizer.from_dir(trained_tokenizer)
    folder = write_shards([PROSE * 4, PROSE.upper() * 4], tokenizer, tmp_path / "shards")
    train, val = TokenWindows(folder, seq_len=8).split(0.25)
    assert len(train) + len(val) == TokenWindows(folder, seq_len=8).total_windows and len(val) >= 1
    targets = lambda part: torch.cat([part[i][1:] for i in range(len(part))]).numpy()  # noqa: E731
    assert (train.token_counts(1000) == np.bincount(targets(train), minlength=1000)).all()
    counts = np.bincount(targets(train), minlength=1000) + 1.0
    expected = np.exp(-np.log(counts / counts.sum())[targets(val)].mean())
    assert unigram_perplexity(train, val, 1000) == pytest.approx(expected)


def test_a_damaged_shard_is_reported(trained_tokenizer, tmp_path):
    folder = write_shards([PROSE], Tokenizer.from_dir(trained_tokenizer), tmp_path / "shards")
    with open(folder / "shard-00000.bin", "ab") as f:
        f.write(b"\x01")
    with pytest.raises(LmstackError, match="damaged"):
        TokenWindows(folder, 8)
