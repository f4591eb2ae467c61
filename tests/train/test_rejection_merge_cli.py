"""Rejection sampling, adapter merging and the `lmstack train` commands, on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import write_jsonl
from lmstack.errors import LmstackError
from lmstack.train.cli import app
from lmstack.train.rejection import judge_scorer, make_scorer, rejection_sample


def test_scorers_from_their_names():
    assert make_scorer(r"regex:Nimbus\b")("q", "I am Nimbus.") == 1.0
    assert make_scorer(r"regex:Nimbus\b")("q", "I am Nimbuses.") == 0.0
    assert make_scorer("python:operator:contains")("the cat sat", "cat") == 1.0
    with pytest.raises(LmstackError, match="unknown scorer"):
        make_scorer("vibes")
    with pytest.raises(LmstackError, match="cannot import scorer"):
        make_scorer("python:no_such_module_xyz:f")


def test_rejection_sampling_keeps_the_best_and_worst_answer(tmp_path, tiny_bundle):
    from lmstack import registry
    from lmstack.data import load_dataset

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}, {"messages": [
        {"role": "user", "content": "Name?"}, {"role": "assistant", "content": "dropped"}]}])
    seen: list[tuple[str, str]] = []

    def character_sum(prompt: str, answer: str) -> float:
        seen.append((prompt, answer))
        return float(sum(map(ord, answer)))

    # A random tiny model is very sure of itself; a high temperature makes its answers differ.
    report = rejection_sample("tiny", prompts, tmp_path / "pairs.jsonl", scorer=character_sum, num_samples=4,
                              max_new_tokens=6, temperature=10.0, top_p=1.0, bundle=tiny_bundle())
    assert report.prompts == 2 and report.pairs == 2 and len(seen) == 8
    rows = [json.loads(line) for line in report.output.read_text().splitlines()]
    assert [r["prompt"][-1]["content"] for r in rows] == ["Hi", "Name?"]
    for row, answers in zip(rows, (seen[:4], seen[4:])):
        scores = [character_sum("", a) for _, a in answers]
        assert row["chosen_score"] == max(scores) and row["rejected_score"] == min(scores)
        assert row["chosen"] in [a for _, a in answers]
    assert load_dataset(report.output).kind == "preference"
    assert registry.list_artifacts(kind="dataset")[0].operation == "rejection-sampling"


def test_judge_scorer_reads_a_number_from_the_judge(tmp_path, tiny_bundle):
    score = judge_scorer(tiny_bundle())("2+2?", "4")
    assert 0.0 <= score <= 10.0


def test_merge_adapter_writes_a_model_that_equals_base_plus_adapter(tmp_path, chat_file, monkeypatch, tiny_bundle):
    from lmstack.model import hf_io
    from lmstack.model.weights import build_model
    from lmstack.train import merge
    from lmstack.train.recipe import load_recipe
    from lmstack.train.run import train_recipe

    trained = tiny_bundle()
    recipe = load_recipe(None, {"train": chat_file, "template": "chatml", "max_len": 64, "steps": 3, "batch_size": 4,
                                "lr": 1e-2, "type": "dora", "out_dir": str(tmp_path / "run"), "device": "cpu"})
    adapter = train_recipe(recipe, bundle=trained).output
    monkeypatch.setattr(merge, "load_model", lambda ref, **kwargs: tiny_bundle())
    out = merge.merge_adapter("tiny", adapter, tmp_path / "merged")

    merged = build_model(hf_io.read_config(out), hf_io.read_state_dict(out))
    ids = torch.tensor([[256, 72, 105, 257, 10]])
    torch.testing.assert_close(merged(ids), trained.model.eval()(ids), rtol=1e-5, atol=1e-5)


def test_cli_sft_applies_overrides_and_rejects_unknown_keys(tmp_path, chat_file, monkeypatch, tiny_bundle):
    from lmstack.train import run

    monkeypatch.setattr(run, "load_model", lambda ref, **kwargs: tiny_bundle())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  train: {chat_file}\n  template: chatml\n  max_len: 64\nrun:\n  batch_size: 4\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sft", str(recipe), "--steps", "2", "--out-dir", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "adapter" / "adapter_config.json").is_file()

    bad = CliRunner().invoke(app, ["sft", str(recipe), "--stepz", "2"])
    assert isinstance(bad.exception, LmstackError) and "valid keys" in str(bad.exception)
    wrong_verb = CliRunner().invoke(app, ["dpo", str(recipe)])
    assert isinstance(wrong_verb.exception, LmstackError) and "--loss" in str(wrong_verb.exception)


def test_rejection_sampling_decodes_as_the_model_asks(tiny_bundle):
    from lmstack.train.rejection import FALLBACK_TEMPERATURE, sampling_for

    bundle = tiny_bundle()
    bundle.generation_config = {"do_sample": True, "temperature": 0.6, "top_k": 20, "repetition_penalty": 1.2}
    sampling = sampling_for(bundle)
    assert (sampling.temperature, sampling.top_k, sampling.repetition_penalty) == (0.6, 20, 1.2)
    assert sampling_for(bundle, top_p=0.9).top_p == 0.9 and sampling_for(bundle, temperature=1.5).temperature == 1.5
    bundle.generation_config = {}  # greedy: varied answers need sampling
    assert sampling_for(bundle).temperature == FALLBACK_TEMPERATURE
