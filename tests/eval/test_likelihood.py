"""The loglikelihood engine against a plain full-sequence forward pass, on a tiny random model."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.eval import likelihood
from lmstack.eval.likelihood import rolling_loglikelihoods, rolling_windows, score_requests


@pytest.fixture(scope="module")
def model():
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    torch.manual_seed(0)
    config = ModelConfig(family="llama", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=40)
    return Transformer(config).eval()


def reference(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """One request alone, the whole sequence in one forward pass, cut to the window as the harness does."""
    ids = (context + continuation)[-(model.config.max_position_embeddings + 1):][:-1]
    with torch.no_grad():
        logprobs = model(torch.tensor([ids]))[0].log_softmax(-1)[-len(continuation):]
    targets = torch.tensor(continuation)
    return logprobs.gather(1, targets[:, None]).sum().item(), bool((logprobs.argmax(-1) == targets).all())


def random_requests(seed: int, contexts: int = 9) -> list[tuple[list[int], list[int]]]:
    rnd = random.Random(seed)
    requests = []
    for _ in range(contexts):
        context = [rnd.randrange(128) for _ in range(rnd.randint(1, 30))]
        for _ in range(rnd.randint(1, 4)):  # several choices share this context
            requests.append((context, [rnd.randrange(128) for _ in range(rnd.randint(1, 7))]))
    return requests


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_shared_context_scores_equal_one_forward_per_request(model, batch_size):
    requests = random_requests(0) + [([5] * 60, [7, 8, 9])]  # the last is cut from the left to fit
    expected = [reference(model, c, k) for c, k in requests]
    got = score_requests(model, requests, batch_size=batch_size)
    for (logprob, greedy), (want, want_greedy) in zip(got, expected):
        assert logprob == pytest.approx(want, abs=1e-4)
        assert greedy == want_greedy


def test_greedy_flag_is_true_when_the_continuation_is_the_argmax(model):
    context = [3, 1, 4, 1, 5]
    ids = list(context)
    with torch.no_grad():
        for _ in range(4):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    greedy_continuation = ids[len(context):]
    [(_, greedy), (_, other)] = score_requests(model, [(context, greedy_continuation),
                                                       (context, greedy_continuation[:-1] + [(ids[-1] + 1) % 128])])
    assert greedy and not other


def test_long_continuations_run_in_chunks_with_the_same_result(model, monkeypatch):
    requests = random_requests(1, contexts=4)
    whole = score_requests(model, requests)
    monkeypatch.setattr(likelihood, "LOGITS_BUDGET", 128 * 3)  # a few positions per pass
    chunked = score_requests(model, requests)
    assert [a for a, _ in chunked] == pytest.approx([a for a, _ in whole], abs=1e-3)
    assert [g for _, g in chunked] == [g for _, g in whole]


def test_scores_are_reported_batch_by_batch(model):
    requests = random_requests(2)
    seen: dict[int, float] = {}
    final = score_requests(model, requests, batch_size=2, on_scored=lambda ids, s: seen.update(zip(ids, s)))
    assert sorted(seen) == list(range(len(requests)))
    assert [seen[i] for i in range(len(requests))] == final


def test_rolling_windows_predict_every_token_once():
    ids = list(range(100, 137))
    for window, stride in [(8, 8), (8, 3), (40, 20), (2, 1)]:
        windows = rolling_windows(ids, window=window, stride=stride)
        predicted = [t for _, continuation in windows for t in continuation]
        assert predicted == ids[1:]
        for context, continuation in windows:
            assert context  # something predicts the first scored token
            assert len(context) + len(continuation) - 1 <= window  # what is fed fits the window
            position = ids.index(continuation[0])
            assert context == ids[position - len(context): position]  # the tokens right before


def test_rolling_loglikelihood_equals_strided_reference(model):
    ids = [random.Random(3).randrange(128) for _ in range(70)]
    window, stride = 16, 6
    total = 0.0
    with torch.no_grad():  # the textbook loop: one window at a time, keep the fresh positions
        scored_until = 1
        for start in range(0, len(ids) - 1, stride):
            end = min(start + window, len(ids))
            logprobs = model(torch.tensor([ids[start:end]]))[0, :-1].log_softmax(-1)
            token_logprobs = logprobs.gather(1, torch.tensor(ids[start + 1:end])[:, None])[:, 0]
            total += token_logprobs[scored_until - start - 1:].sum().item()
            scored_until = end
            if end == len(ids):
                break
    [(got, count)] = rolling_loglikelihoods(model, [ids], window=window, stride=stride, batch_size=4)
    assert count == len(ids) - 1
    assert got == pytest.approx(total, abs=1e-3)
    assert math.isfinite(got)


def test_bad_requests_are_refused(model):
    with pytest.raises(LmstackError, match="non-empty context and continuation"):
        score_requests(model, [([], [1])])
    with pytest.raises(LmstackError, match="does not fit"):
        score_requests(model, [([1], list(range(50)))])
    with pytest.raises(LmstackError, match="stride"):
        rolling_windows([1, 2, 3], window=4, stride=5)
