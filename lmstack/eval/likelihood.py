"""Likelihood of text under a model: the scoring engine behind perplexity, multiple choice and
every loglikelihood request lm-evaluation-harness can send.

A request is (context ids, continuation ids). Its score is the sum of the log-probabilities of
the continuation tokens, each given everything before it, and whether greedy decoding would have
produced exactly that continuation.

What makes it fast:
- Requests that share a context (the choices of one question) run the context once: a prefill
  fills a KV cache, the cache is copied once per continuation, and a second, short pass over
  the continuations reads their log-probabilities. A 4-choice question costs one context, not 4.
- Only positions that predict a scored token go through the output head (`last_only`,
  `logits_at`): the vocabulary projection is a fifth of a small model's compute.
- Batches are sorted by length, longest first, so padding is small (and memory trouble, if any,
  shows up at once rather than at the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from lmstack.data import dataset_path
from lmstack.errors import LmstackError
from lmstack.eval.scores import record_score
from lmstack.hub.load import ModelBundle, load_model
from lmstack.inputs import read_text

Request = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)
# Called after each batch with the request indices just scored and their (logprob, greedy).
ScoredCallback = Callable[[list[int], list[tuple[float, bool]]], None]

# At most this many logits (positions x vocabulary, fp32) are alive at once; longer continuations
# run through the model in time chunks over the cache.
LOGITS_BUDGET = 1 << 25


def score_requests(model: torch.nn.Module, requests: Sequence[Request], *, batch_size: int = 16,
                   on_scored: ScoredCallback | None = None) -> list[tuple[float, bool]]:
    """(sum of continuation log-probs, greedy) for every request, in the order given.

    `batch_size` counts distinct contexts per batch (the rows of the prefill); all their
    continuations then share one more, short pass. For one-continuation requests (rolling windows,
    plain loglikelihood) that is simply requests per batch. Contexts longer than the model's
    window are cut from the left, as the harness does.
    """
    if batch_size < 1:
        raise LmstackError(f"batch_size must be at least 1, got {batch_size}")
    limit = model.config.max_position_embeddings
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (context, continuation) in enumerate(requests):
        context = _fit_window(list(context), list(continuation), limit)
        groups.setdefault(tuple(context), []).append(index)
    # Longest first: time estimates only improve, and an out-of-memory shows up at once.
    ordered = sorted(groups.items(), key=lambda g: -(len(g[0]) + max(len(requests[i][1]) for i in g[1])))
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    with torch.inference_mode():
        for batch in (ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)):
            items = [(list(context), [list(requests[i][1]) for i in indices]) for context, indices in batch]
            scored = [score for group in _score_batch(model, items) for score in group]
            indices = [i for _, group_indices in batch for i in group_indices]
            for i, score in zip(indices, scored):
                results[i] = score
            if on_scored is not None:
                on_scored(indices, scored)
    return results  # type: ignore[return-value]


def _fit_window(context: list[int], continuation: list[int], limit: int) -> list[int]:
    if not context or not continuation:
        raise LmstackError("a loglikelihood request needs a non-empty context and continuation")
    if len(continuation) > limit:
        raise LmstackError(f"a continuation of {len(continuation)} tokens does not fit the model's "
                           f"{limit}-token window; shorten it")
    room = limit + 1 - len(continuation)  # the last continuation token is never fed
    return context[-room:]


def _score_batch(model: torch.nn.Module, items: list[tuple[list[int], list[list[int]]]]
                 ) -> list[list[tuple[float, bool]]]:
    """Score the continuations of a few contexts: a prefill per context, then one continuation pass."""
    device = model.lm_head.weight.device
    contexts = [context for context, _ in items]
    continuations = [c for _, conts in items for c in conts]
    rows = torch.tensor([g for g, (_, conts) in enumerate(items) for _ in conts], device=device)
    context_ids, context_mask = _pad(contexts, left=True, device=device)
    longest = max(map(len, continuations))
    cache = model.new_cache(len(items), context_ids.shape[1] + longest - 1)
    padded = not bool(context_mask.all())
    last = model(context_ids, attention_mask=context_mask if padded else None, cache=cache, last_only=True)[:, -1]
    first = torch.tensor([c[0] for c in continuations], device=device)
    logprob = last.log_softmax(-1)[rows, first]
    misses = (last.argmax(-1)[rows] != first).long()
    if longest > 1:  # feed each continuation but its last token; read the log-prob of the next one
        cache.reorder(rows)
        feed, feed_mask = _pad([c[:-1] for c in continuations], left=False, device=device)
        targets, _ = _pad([c[1:] for c in continuations], left=False, device=device)
        mask = torch.cat([context_mask[rows], feed_mask], dim=1)
        step = max(1, LOGITS_BUDGET // (len(continuations) * last.shape[-1]))
        for start in range(0, longest - 1, step):
            end = min(start + step, longest - 1)
            wanted = feed_mask[:, start:end].bool()
            logits = model(feed[:, start:end], attention_mask=mask[:, : context_ids.shape[1] + end], cache=cache,
                           logits_at=wanted)
            row_of, target = wanted.nonzero()[:, 0], targets[:, start:end][wanted]
            logprob.index_add_(0, row_of, logits.log_softmax(-1).gather(1, target[:, None])[:, 0])
            misses.index_add_(0, row_of, (logits.argmax(-1) != target).long())
    scores = list(zip(logprob.tolist(), (misses == 0).tolist()))
    grouped, start = [], 0
    for _, conts in items:
        grouped.append(scores[start : start + len(conts)])
        start += len(conts)
    return grouped


def _pad(rows: list[list[int]], *, left: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) padded to the longest row; the pad id is 0 (masked, never read)."""
    width = max(map(len, rows))
    ids, mask = [], []
    for row in rows:
        gap = [0] * (width - len(row))
        ids.append(gap + row if left else row + gap)
        mask.append([0] * len(gap) + [1] * len(row) if left else [1] * len(row) + [0] * len(gap))
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def rolling_windows(ids: Sequence[int], *, window: int, stride: int) -> list[Request]:
    """(context, continuation) windows that predict every token of `ids` after the first once.

    Windows of `window` tokens advance by `stride`; a token is scored in the first window that
    reaches it, with up to `window - stride` tokens of context before it (strided evaluation).
    """
    if not 1 <= stride <= window:
        raise LmstackError(f"rolling windows need 1 <= stride <= window, got stride {stride} and window {window}")
    if window < 2:
        raise LmstackError(f"a rolling window needs at least 2 tokens, got {window}")
    windows, scored_until = [], 1
    for start in range(0, len(ids) - 1, stride):
        end = min(start + window, len(ids))
        windows.append((list(ids[start:scored_until]), list(ids[scored_until:end])))
        scored_until = end
        if end == len(ids):
            break
    return windows


def rolling_loglikelihoods(model: torch.nn.Module, token_lists: Sequence[Sequence[int]], *, window: int,
                           stride: int, batch_size: int = 16) -> list[tuple[float, int]]:
    """(total log-prob, tokens scored) of each list, every token after the first predicted once.

    Windows of all lists are batched together, sorted by length.
    """
    window = min(window, model.config.max_position_embeddings)
    stride = min(stride, window)
    requests, owner = [], []
    for index, ids in enumerate(token_lists):
        for request in rolling_windows(ids, window=window, stride=stride):
            requests.append(request)
            owner.append(index)
    totals = [[0.0, 0] for _ in token_lists]
    for index, request, (logprob, _) in zip(owner, requests, score_requests(model, requests, batch_size=batch_size)):
        totals[index][0] += logprob
        totals[index][1] += len(request[1])
    return [(total, count) for total, count in totals]


def perplexity(bundle: ModelBundle, text: str, *, window: int = 512, stride: int = 256) -> float:
    """exp(mean negative log-likelihood) of every token of `text` after the first (as transformers' loss).

    Windows of `window` tokens advance by `stride`; each token is scored once, with up to
    `window - stride` tokens of context before it (the usual strided evaluation).
    """
    if not 1 <= stride <= window:
        raise LmstackError(f"perplexity needs 1 <= stride <= window, got stride {stride} and window {window}")
    ids = bundle.tokenizer.encode(text)  # with BOS only where the model's tokenizer adds one
    if len(ids) < 2:
        raise LmstackError(f"perplexity needs a text of at least 2 tokens, got {len(ids)}; give a longer text")
    [(total, count)] = rolling_loglikelihoods(bundle.model, [ids], window=window, stride=stride)
    return math.exp(-total / count)


@dataclass
class PerplexityResult:
    model: str
    perplexity: float


def evaluate_perplexity(model: str, text: str, *, adapter: str | Path | None = None, device: str | None = None,
                        dtype: str | None = None, window: int = 512, stride: int = 256) -> PerplexityResult:
    """Perplexity of `model` on a text file (or `lmstack:NAME`), recorded in the registry.

    The text is read and checked before the model loads.
    """
    content = read_text(dataset_path(text), "text to score")
    bundle = load_model(model, device=device, dtype=dtype, adapter=adapter)
    value = perplexity(bundle, content, window=window, stride=stride)
    record_score(bundle, "perplexity", value, text, {"window": window, "stride": stride,
                                                     "dtype": str(next(bundle.model.parameters()).dtype)})
    return PerplexityResult(bundle.name, value)
