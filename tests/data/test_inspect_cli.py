"""`lmstack data inspect` and `lmstack data convert`, through the library and the CLI."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lmstack
from lmstack.data import inspect_dataset, load_dataset, read_records
from lmstack.data.cli import app

IDENTITY = Path(lmstack.__file__).parent / "datasets" / "identity_train.jsonl"
PREFERENCES = Path(lmstack.__file__).parent / "datasets" / "preferences_heldout.jsonl"


@pytest.mark.real
def test_inspect_reports_lengths_trained_tokens_and_a_histogram(smollm2_gguf, tmp_path):
    from lmstack.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf(smollm2_gguf)
    report = inspect_dataset(IDENTITY, tokenizer, plot=tmp_path / "lengths.png", sample_index=3)
    records = load_dataset(IDENTITY).records
    lengths = [len(tokenizer.apply_chat_template(r["messages"], tokenize=True)) for r in records]
    assert report.format_counts == {"messages": len(records)}
    assert report.length_stats["min"] == min(lengths) and report.length_stats["max"] == max(lengths)
    assert report.length_stats["mean"] == pytest.approx(sum(lengths) / len(lengths))
    assert report.total_tokens == sum(lengths) and 0 < report.trained_tokens < report.total_tokens
    assert (tmp_path / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pieces = report.sample_tokens
    assert "".join(p for p, _ in pieces) == tokenizer.apply_chat_template(records[3]["messages"])
    assert "".join(p for p, trained in pieces if trained).endswith("<|im_end|>")


@pytest.mark.real
def test_cli_inspect_json_for_preferences(smollm2_gguf):
    result = CliRunner().invoke(app, ["inspect", str(PREFERENCES), "--model", str(smollm2_gguf), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["kind"], report["num_records"], report["num_sequences"]) == ("preference", 30, 60)
    assert report["length_stats"]["p50"] <= report["length_stats"]["p95"] <= report["length_stats"]["max"]


def test_cli_convert_to_sharegpt_and_back(tmp_path):
    runner = CliRunner()
    sharegpt, back = tmp_path / "sharegpt.jsonl", tmp_path / "back.jsonl"
    assert runner.invoke(app, ["convert", str(IDENTITY), str(sharegpt), "--to", "sharegpt"]).exit_code == 0
    assert "conversations" in read_records(sharegpt)[0]
    result = runner.invoke(app, ["convert", str(sharegpt), str(back), "--to", "messages"])
    assert result.exit_code == 0 and "Wrote 200 records" in result.output
    assert read_records(back) == read_records(IDENTITY)


def test_cli_convert_reports_user_errors(tmp_path):
    result = CliRunner().invoke(app, ["convert", str(IDENTITY), str(tmp_path / "a.jsonl"), "--to", "alpaca"])
    assert result.exit_code != 0
    assert "Alpaca holds one question and one answer" in str(result.exception)
    assert not (tmp_path / "a.jsonl").exists()
