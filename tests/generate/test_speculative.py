"""Speculative decoding: prompt lookup and a draft model, exact greedy output, exact sampling rule."""

from __future__ import annotations

import copy

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.generate.engine import Engine, EngineConfig, Request
from lmstack.generate.processors import SamplingConfig
from lmstack.generate.speculative import SpeculativeConfig, lookup_ngram, verify
from lmstack.model.transformer import Transformer


@pytest.fixture(scope="module")
def target(tiny_model_bf16):
    return tiny_model_bf16


@pytest.fixture(scope="module")
def tiny_model_bf16():
    from lmstack.model.config import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(family="llama", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=512)
    model = Transformer(config).eval()
    with torch.no_grad():  # peaked, varied predictions: drafts are sometimes right and sometimes not
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.15)
    return model.to(torch.bfloat16)


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(5)
    return [torch.randint(3, 128, (int(n),), generator=g).tolist() for n in (12, 30, 7, 50)]


def generate(model, prompts, speculative=None, **request):
    engine = Engine(model, config=EngineConfig(kv_cache_mb=4, speculative=speculative))
    handles = engine.generate([Request(p, max_new_tokens=40, **request) for p in prompts])
    return [h.token_ids for h in handles], engine.metrics()


def test_prompt_lookup_finds_the_latest_continuation():
    tokens = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert lookup_ngram(tokens, 2, 3, 1) == [7, 8]  # "1 2 3" last seen before the end is followed by 7 8
    assert lookup_ngram([4, 5, 6], 3, 3, 1) == []
    assert lookup_ngram([4, 5, 4], 2, 3, 1) == [5, 4]


@pytest.mark.parametrize("method", ["ngram", "draft-self", "draft-other"])
def test_greedy_output_is_identical_with_and_without_speculation(target, prompts, method):
    plain, _ = generate(target, prompts)
    if method == "ngram":
        spec = SpeculativeConfig("ngram", num_tokens=4)
    else:
        draft = target if method == "draft-self" else _other_model(target)
        spec = SpeculativeConfig("draft", num_tokens=3, draft_model=draft)
    fast, metrics = generate(target, prompts, speculative=spec)
    assert fast == plain
    assert metrics.speculative_acceptance_rate is not None
    if method == "draft-self":  # a draft equal to the target is always right
        assert metrics.speculative_acceptance_rate == 1.0
    else:  # some drafts kept, some rejected: both paths of the rule ran
        assert 0 < metrics.speculative_acceptance_rate < 1


def test_speculation_skips_requests_that_opt_out(target, prompts):
    spec = SpeculativeConfig("ngram", num_tokens=4)
    _, metrics = generate(target, prompts, speculative=spec, speculate=False)
    assert metrics.speculative_acceptance_rate is None


def test_seeded_sampling_with_speculation_is_reproducible(target, prompts):
    spec = SpeculativeConfig("draft", num_tokens=3, draft_model=_other_model(target))
    sampling = SamplingConfig(temperature=0.9, top_p=0.95)
    first, _ = generate(target, prompts[:2], speculative=spec, sampling=sampling, seed=3)
    again, _ = generate(target, prompts[:2], speculative=spec, sampling=sampling, seed=3)
    assert first == again and all(len(t) == 40 for t in first)


@pytest.mark.parametrize("with_draft_model", [False, True])
def test_rejection_rule_keeps_the_target_distribution(with_draft_model):
    """Accepting x with min(1, p/q) and resampling the residual gives exactly p (checked empirically)."""
    g = torch.Generator().manual_seed(0)
    p_logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0], [0.0] * 6])
    p = p_logits[0].softmax(-1)
    q = torch.tensor([0.05, 0.05, 0.5, 0.3, 0.05, 0.05])
    counts = torch.zeros(6)
    trials = 20000
    for _ in range(trials):
        draft = int(torch.multinomial(q, 1, generator=g)) if with_draft_model else 2
        first = verify(p_logits, [draft], q[None] if with_draft_model else None, greedy=False, generator=g)[0]
        counts[first] += 1
    assert (counts / trials - p).abs().sum() / 2 < 0.015  # total variation distance


def test_greedy_rule_accepts_the_agreeing_prefix():
    logits = torch.eye(5)[[1, 2, 3, 4]] * 10  # argmax 1, 2, 3, 4 at the four positions
    assert verify(logits, [1, 2, 0], None, greedy=True, generator=None) == [1, 2, 3]
    assert verify(logits, [1, 2, 3], None, greedy=True, generator=None) == [1, 2, 3, 4]
    assert verify(logits, [0, 2, 3], None, greedy=True, generator=None) == [1]


@pytest.mark.parametrize(
    "config, message",
    [(dict(method="medusa"), "unknown speculative method"), (dict(num_tokens=0), "num_tokens must be in"),
     (dict(method="draft"), "needs a draft_model"), (dict(ngram_min=3, ngram_max=2), "ngram_min")],
)
def test_speculative_config_is_checked(config, message):
    with pytest.raises(LmstackError, match=message):
        SpeculativeConfig(**config)


def _other_model(target: Transformer) -> Transformer:
    """A draft that agrees with the target often but not always: the target with noisy weights."""
    draft = copy.deepcopy(target)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_((torch.randn(p.shape, generator=g) * 0.3 * p.float().std()).to(p.dtype))
    return draft
