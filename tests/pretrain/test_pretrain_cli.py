"""The pre-training commands end to end as a user types them: tokenizer, shards, a short run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lmstack.cli import app


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_tokenizer_shards_and_pretrain_from_the_command_line(corpus_dir, tmp_path):
    out = invoke("tokenizer", "train", str(corpus_dir), str(tmp_path / "tok"), "--vocab-size", "500")
    assert "bytes per token" in out and (tmp_path / "tok" / "tokenizer.json").is_file()
    out = invoke("data", "shards", str(corpus_dir), str(tmp_path / "shards"), "--tokenizer", str(tmp_path / "tok"),
                 "--shard-tokens", "100000")
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert len(index["shards"]) > 1 and f"{index['tokens']:,} tokens" in out
    # flags only, then recipe keys as extra flags (the override that comes first must not become the recipe)
    out = invoke("train", "pretrain", "--max-len", "32", "--data", str(tmp_path / "shards"), "--tokenizer",
                 str(tmp_path / "tok"), "--depth", "1", "--steps", "3", "--out-dir", str(tmp_path / "run"),
                 "--batch-size", "4", "--model.device", "cpu")
    assert "held-out perplexity" in out and "unigram baseline" in out
    recipe = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "max_len: 32" in recipe and "batch_size: 4" in recipe and "loss: pretrain" in recipe
