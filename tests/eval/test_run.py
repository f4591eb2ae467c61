"""`evaluate` end to end on a tiny model: every output type, the registry record, resuming an
interrupted run, the output-folder rules, and equality with lm-eval's `hf` backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval_peer import assert_same_scores, harness_results

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.eval import likelihood
from lmstack.eval.run import EvalSettings, evaluate

ALL = "lmstack_mc,lmstack_arith,lmstack_rewrite,lmstack_prose"


def test_every_output_type_is_scored_and_recorded_with_its_origin(tiny_model_dir, tmp_path):
    settings = EvalSettings(limit=6, batch_size=4, bootstrap_iters=20)
    out = evaluate(str(tiny_model_dir), ALL, settings=settings, output=tmp_path / "run")
    results = out["results"]
    assert set(results["lmstack_mc"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert {"exact_match", "exact_match,flexible-extract"} <= set(results["lmstack_arith"])
    assert {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "bleu_stderr"} <= set(results["lmstack_rewrite"])
    prose = results["lmstack_prose"]
    assert prose["bits_per_byte"] > 0 and prose["byte_perplexity"] == pytest.approx(2 ** prose["bits_per_byte"])
    assert out["n-samples"]["lmstack_mc"] == {"original": 274, "effective": 6}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["results"] == results
    scores = {s.metric: s for s in registry.scores(out["config"]["model_id"])}
    acc = scores["lmstack_mc/acc"]
    assert acc.value == results["lmstack_mc"]["acc"] and acc.dataset == "lmstack:task/lmstack_mc"
    assert acc.details["sha256"] == out["config"]["tasks"]["lmstack_mc"]["hash"]
    assert acc.details["stderr"] == results["lmstack_mc"]["acc_stderr"]
    assert acc.details["seed"] == 1234 and acc.details["settings"]["limit"] == 6 and acc.details["samples"] == 6
    assert "lmstack_arith/exact_match,flexible-extract" in scores


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_where_it_stopped(tiny_model_dir, tmp_path, monkeypatch):
    settings = EvalSettings(limit=12, batch_size=4)
    scored: list[int] = []
    original = likelihood.score_requests
    monkeypatch.setattr("lmstack.eval.run.score_requests",
                        lambda model, requests, **kw: scored.append(len(requests)) or original(model, requests, **kw))

    def stop_after_first_batch(task: str, done: int, total: int) -> None:
        if 0 < done < total:
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate(str(tiny_model_dir), "lmstack_mc", settings=settings, output=tmp_path / "run", progress=stop_after_first_batch)
    kept = len((tmp_path / "run" / "samples" / "lmstack_mc.jsonl").read_text().splitlines())
    assert 0 < kept < 12 and not (tmp_path / "run" / "results.json").exists()
    with pytest.raises(LmstackError, match="folder is not empty"):
        evaluate(str(tiny_model_dir), "lmstack_mc", settings=settings, output=tmp_path / "run")
    resumed = evaluate(str(tiny_model_dir), "lmstack_mc", settings=settings, output=tmp_path / "run", resume=True)
    assert scored == [48, 48 - 4 * kept]  # the second run asked only for the documents not yet scored
    fresh = evaluate(str(tiny_model_dir), "lmstack_mc", settings=settings, output=tmp_path / "fresh")
    assert resumed["results"] == fresh["results"]


def test_resuming_with_other_settings_is_refused_and_overwrite_starts_again(tiny_model_dir, tmp_path):
    evaluate(str(tiny_model_dir), "lmstack_mc", settings=EvalSettings(limit=3), output=tmp_path / "run")
    with pytest.raises(LmstackError, match="different limit"):
        evaluate(str(tiny_model_dir), "lmstack_mc", settings=EvalSettings(limit=4), output=tmp_path / "run", resume=True)
    out = evaluate(str(tiny_model_dir), "lmstack_mc", settings=EvalSettings(limit=4), output=tmp_path / "run",
                   overwrite=True)
    assert out["n-samples"]["lmstack_mc"]["effective"] == 4


def test_without_output_the_same_command_reuses_its_run(tiny_model_dir, monkeypatch):
    first = evaluate(str(tiny_model_dir), "lmstack_prose", settings=EvalSettings(limit=2))
    monkeypatch.setattr("lmstack.eval.run.score_requests", lambda *a, **k: pytest.fail("scored again"))
    again = evaluate(str(tiny_model_dir), "lmstack_prose", settings=EvalSettings(limit=2))
    assert again["output"] == first["output"] and again["results"] == first["results"]
    assert len([s for s in registry.scores(first["config"]["model_id"]) if s.metric == "lmstack_prose/bits_per_byte"]) == 1


def test_a_bad_task_fails_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr("lmstack.eval.run.load_model", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "t.yaml").write_text("task: x\noutput_type: essay\n")
    with pytest.raises(LmstackError, match="unknown output_type 'essay'"):
        evaluate("any-model", str(tmp_path / "t.yaml"))
    with pytest.raises(LmstackError, match="batch_size"):
        evaluate("any-model", "lmstack_mc", settings=EvalSettings(batch_size=0))


def test_scores_equal_lm_eval_hf_backend_on_the_same_weights(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    tasks = ["lmstack_mc", "lmstack_prose"]
    theirs = harness_results(tiny_model_dir, tasks, tmp_path, monkeypatch, limit=30)
    ours = evaluate(str(tiny_model_dir), ",".join(tasks), settings=EvalSettings(limit=30, batch_size=8),
                    output=tmp_path / "ours", dtype="fp32")
    assert_same_scores(ours, theirs, tmp_path / "ours")
