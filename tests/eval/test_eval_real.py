"""On SmolLM2's real weights: our multiple-choice accuracy equals lm-evaluation-harness's with its
`hf` backend, and our rolling perplexity equals the one computed from transformers' logits."""

from __future__ import annotations

import math

import pytest
import torch
from lm_eval_peer import assert_same_scores, harness_results

from lmstack.eval.run import EvalSettings, evaluate_bundle
from lmstack.eval.task import SHIPPED_TASKS, load_task

pytestmark = pytest.mark.real


def test_multiple_choice_equals_lm_eval_hf_backend(smollm2, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    theirs = harness_results(smollm2.path, ["lmstack_mc"], tmp_path, monkeypatch, limit=30)
    ours = evaluate_bundle(smollm2, [load_task(SHIPPED_TASKS / "lmstack_mc.yaml")], output=tmp_path / "ours",
                           settings=EvalSettings(limit=30, batch_size=8))
    assert_same_scores(ours, theirs, tmp_path / "ours")
    assert 0.25 < ours["results"]["lmstack_mc"]["acc"] <= 1  # better than chance: the prompts reach the model


@pytest.mark.parametrize(("window", "stride"), [(2048, 1024), (48, 16)])
def test_rolling_perplexity_equals_transformers_logits(smollm2, tmp_path, window, stride):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(smollm2.path, dtype=torch.float32).eval()
    task = load_task(SHIPPED_TASKS / "lmstack_prose.yaml")
    prefix = smollm2.tokenizer.bos_token_id if smollm2.tokenizer.bos_token_id is not None \
        else smollm2.tokenizer.eos_token_id
    total, words, nbytes = 0.0, 0, 0
    for doc in task.docs[:3]:
        ids = [prefix, *smollm2.tokenizer.encode(doc["text"], add_special_tokens=False)]
        scored_until = 1
        with torch.no_grad():  # each token once, with up to window - stride tokens of context
            for start in range(0, len(ids) - 1, stride):
                end = min(start + window, len(ids))
                logprobs = hf(torch.tensor([ids[start:end]])).logits[0, :-1].float().log_softmax(-1)
                token_logprobs = logprobs.gather(1, torch.tensor(ids[start + 1:end])[:, None])[:, 0]
                total += token_logprobs[scored_until - start - 1:].sum().item()
                scored_until = end
                if end == len(ids):
                    break
        words += len(doc["text"].split())
        nbytes += len(doc["text"].encode("utf-8"))
    ours = evaluate_bundle(smollm2, [task], output=tmp_path / "ours",
                           settings=EvalSettings(limit=3, window=window, stride=stride, batch_size=4))
    results = ours["results"]["lmstack_prose"]
    assert results["word_perplexity"] == pytest.approx(math.exp(-total / words), rel=1e-4)
    assert results["bits_per_byte"] == pytest.approx(-total / nbytes / math.log(2), rel=1e-4)
