"""Our logits processors against transformers' on random logits, and SamplingConfig's validation."""

from __future__ import annotations

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.generate.processors import (
    MinP, RepetitionPenalty, SamplingConfig, Temperature, TopK, TopP, apply_processors, seen_tokens,
)

tf_process = pytest.importorskip("transformers.generation.logits_process")


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 50, (4, 12), generator=g)
    logits = torch.randn(4, 50, generator=g) * 3
    return input_ids, logits


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (Temperature(0.7), lambda: tf_process.TemperatureLogitsWarper(0.7)),
        (Temperature(1.8), lambda: tf_process.TemperatureLogitsWarper(1.8)),
        (TopK(1), lambda: tf_process.TopKLogitsWarper(1)),
        (TopK(7), lambda: tf_process.TopKLogitsWarper(7)),
        (TopK(500), lambda: tf_process.TopKLogitsWarper(500)),
        (TopP(0.01), lambda: tf_process.TopPLogitsWarper(0.01)),
        (TopP(0.5), lambda: tf_process.TopPLogitsWarper(0.5)),
        (TopP(0.95), lambda: tf_process.TopPLogitsWarper(0.95)),
        (MinP(0.05), lambda: tf_process.MinPLogitsWarper(0.05)),
        (MinP(0.3), lambda: tf_process.MinPLogitsWarper(0.3)),
        (MinP(1.0), lambda: tf_process.MinPLogitsWarper(1.0)),
        (RepetitionPenalty(1.3), lambda: tf_process.RepetitionPenaltyLogitsProcessor(1.3)),
        (RepetitionPenalty(0.7), lambda: tf_process.RepetitionPenaltyLogitsProcessor(0.7)),
    ],
)
def test_processor_equals_transformers(batch, ours, theirs):
    input_ids, logits = batch
    expected = theirs()(input_ids, logits.clone())
    got = ours(seen_tokens(input_ids, 50), logits.clone())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch.isfinite(got).any(dim=-1).all()  # every row keeps at least one token


def test_filters_actually_remove_tokens(batch):
    _, logits = batch
    assert (TopK(7)(None, logits) > float("-inf")).sum(-1).tolist() == [7] * 4
    kept = TopP(0.5)(None, logits) > float("-inf")
    kept_mass = (logits.softmax(-1) * kept).sum(-1)
    assert (kept_mass >= 0.5).all() and (kept.sum(-1) < 50).all()


def test_chain_matches_transformers_order(batch):
    """repetition penalty -> temperature -> top-k -> top-p -> min-p, as transformers applies them."""
    input_ids, logits = batch
    config = SamplingConfig(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    theirs = [
        tf_process.RepetitionPenaltyLogitsProcessor(1.2),
        tf_process.TemperatureLogitsWarper(0.8),
        tf_process.TopKLogitsWarper(20),
        tf_process.TopPLogitsWarper(0.9),
        tf_process.MinPLogitsWarper(0.05),
    ]
    expected = logits.clone()
    for p in theirs:
        expected = p(input_ids, expected)
    got = apply_processors(config.processors(), seen_tokens(input_ids, 50), logits.clone())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_greedy_applies_only_the_repetition_penalty():
    assert SamplingConfig(temperature=0.0, top_k=5, top_p=0.5).processors() == []
    chain = SamplingConfig(do_sample=False, temperature=0.7, repetition_penalty=1.1).processors()
    assert [type(p) for p in chain] == [RepetitionPenalty]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
        ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
        ({"temperature": -1.0}, "temperature must be >= 0 (0 = greedy), got -1.0"),
        ({"top_k": -3}, "top_k must be an integer >= 0 (0 = off), got -3"),
        ({"min_p": 2.0}, "min_p must be in [0, 1], got 2.0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0 (1 = off), got 0.0"),
        ({"num_beams": 0}, "num_beams must be an integer >= 1, got 0"),
        ({"early_stopping": "sometimes"}, "early_stopping must be true, false or 'never'"),
        ({"do_sample": True}, "do_sample=True needs a temperature > 0"),
        ({"num_beams": 3, "temperature": 0.7}, "num_beams=3 runs beam search, which does not sample"),
    ],
)
def test_invalid_values_say_the_valid_range(settings, message):
    with pytest.raises(LmstackError) as error:
        SamplingConfig(**settings)
    assert message in str(error.value)


def test_updated_rejects_unknown_keys_and_validates():
    config = SamplingConfig().updated(temperature=0.7, top_p=0.9)
    assert (config.temperature, config.top_p) == (0.7, 0.9)
    with pytest.raises(LmstackError, match="unknown sampling setting.*temprature.*valid: temperature"):
        config.updated(temprature=0.5)
    with pytest.raises(LmstackError, match="top_p must be in"):
        config.updated(top_p=3.0)


def test_generation_config_counts_filters_only_when_sampling():
    assert SamplingConfig.from_generation_config({"temperature": 0.6, "top_p": 0.9}) == SamplingConfig()
    assert SamplingConfig.from_generation_config({"do_sample": True, "temperature": 0.6, "top_p": 0.9}) == \
        SamplingConfig(temperature=0.6, top_k=50, top_p=0.9)
    assert SamplingConfig.from_generation_config({"repetition_penalty": 1.1, "num_beams": 2}) == \
        SamplingConfig(repetition_penalty=1.1, num_beams=2)
