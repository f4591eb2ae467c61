"""Perplexity against transformers' loss; answer matching on real generations."""

from __future__ import annotations

import math

import pytest
import torch

from lmstack.errors import LmstackError

TEXT = ("The river ran quietly past the old mill, where children used to gather on summer evenings. "
        "Nobody remembers exactly when the wheel stopped turning, but the stones are still warm at noon.")


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
    with pytest.raises(LmstackError, match="record 1 needs a 'messages' list and an 'expected' string"):
        answer_match_rate(smollm2, [{"prompt": "hi"}])


def test_perplexity_of_a_text_shorter_than_two_tokens_is_an_error():
    from types import SimpleNamespace

    from lmstack.eval import perplexity
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    config = ModelConfig(family="llama", vocab_size=16, hidden_size=16, intermediate_size=32, num_layers=1,
                         num_heads=2, num_kv_heads=1, head_dim=8)
    one_token = SimpleNamespace(encode=lambda text: [3] if text else [])
    bundle = SimpleNamespace(tokenizer=one_token, model=Transformer(config), config=config,
                             device=torch.device("cpu"))
    for text in ("x", ""):
        with pytest.raises(LmstackError, match="at least 2 tokens"):
            perplexity(bundle, text)
