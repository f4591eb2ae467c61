"""Perplexity against transformers' loss; answer matching on real generations."""

from __future__ import annotations

import math

import pytest
import torch

from lmstack.errors import LmstackError

TEXT = ("The river ran quietly past the old mill, where children used to gather on summer evenings. "
        "Nobody remembers exactly when the wheel stopped turning, but the stones are still warm at noon.")


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    import lmstack

    return lmstack.load(smollm2_gguf, device="cpu")


@pytest.mark.real
def test_perplexity_equals_exp_of_transformers_loss(smollm2):
    from transformers import AutoModelForCausalLM

    from lmstack.eval import perplexity

    hf = AutoModelForCausalLM.from_pretrained(smollm2.path, dtype=torch.float32).eval()
    ids = torch.tensor([smollm2.tokenizer.encode(TEXT)])
    with torch.no_grad():
        reference = math.exp(hf(ids, labels=ids).loss.item())
    assert perplexity(smollm2, TEXT) == pytest.approx(reference, rel=1e-4)


@pytest.mark.real
def test_sliding_window_scores_every_token_once(smollm2):
    from lmstack.eval import perplexity

    long_text = " ".join([TEXT] * 6)
    whole = perplexity(smollm2, long_text, window=1024, stride=1024)
    strided = perplexity(smollm2, long_text, window=64, stride=32)
    # Less context per token can only make the text look less predictable, never absurdly so.
    assert whole < strided < whole * 3


@pytest.mark.real
def test_answer_match_rate_checks_expected_text(smollm2):
    from lmstack.eval import answer_match_rate

    records = [
        {"messages": [{"role": "user", "content": "What is the capital of France? One word."}], "expected": "Paris"},
        {"messages": [{"role": "user", "content": "What is the capital of France? One word."}], "expected": "Zanzibar"},
    ]
    report = answer_match_rate(smollm2, records, max_new_tokens=12)
    assert [row["matched"] for row in report.rows] == [True, False]
    assert report.rate == 0.5
    with pytest.raises(LmstackError, match="record 1 needs 'messages' and 'expected'"):
        answer_match_rate(smollm2, [{"prompt": "hi"}])
