"""Likelihood of text under a model: the scoring engine behind perplexity, multiple choice and
every loglikelihood request lm-evaluation-harness can send.

A request is (context ids, continuation ids). Its score is the sum of the log-probabilities of
the continuation tokens, each given everything before it, and whether greedy decoding would have
produced exactly that continuation.

What makes it fast:
- Requests that share a context (the choices of one question) are packed into one row: the
  context once, then every continuation but its last token. `SharedContextAttention` lets each
  continuation see the context and its own earlier tokens only, and restarts its positions where
  the context ends, so one forward pass scores all choices exactly as separate passes would. A
  4-choice question costs one context, not 4, and there is no second pass and no cache to copy.
- Only positions that predict a scored token go through the output head (`logits_at`): the
  vocabulary projection is a fifth of a small model's compute.
- Rows are sorted by length, longest first, so padding is small (and memory trouble, if any,
  shows up at once rather than at the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from lmstack.data import dataset_path
from lmstack.errors import LmstackError
from lmstack.eval.scores import record_score
from lmstack.hub.load import ModelBundle, load_model
from lmstack.inputs import read_text

Request = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)
# Called after each batch with the requests it finished and their (logprob, greedy).
ScoredCallback = Callable[[list[int], list[tuple[float, bool]]], None]

# At most this many logits (scored positions x vocabulary, fp32) are alive at once: a batch holds
# fewer rows, and a longer continuation is scored in pieces (the chain rule adds them up).
LOGITS_BUDGET = 1 << 26


def score_requests(model: torch.nn.Module, requests: Sequence[Request], *, batch_size: int = 16,
                   on_scored: ScoredCallback | None = None) -> list[tuple[float, bool]]:
    """(sum of continuation log-probs, greedy) for every request, in the order given.

    `batch_size` counts rows per forward pass; a row is one context with all its continuations.
    Contexts longer than the model's window are cut from the left, as the harness does.
    """
    if batch_size < 1:
        raise LmstackError(f"batch_size must be at least 1, got {batch_size}")
    limit = model.config.max_position_embeddings
    piece = max(1, LOGITS_BUDGET // model.config.vocab_size)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}  # context -> (request, continuation piece)
    pieces_left = [0] * len(requests)
    for index, (context, continuation) in enumerate(requests):
        context, continuation = list(context), list(continuation)
        for start in range(0, max(len(continuation), 1), piece):
            part = continuation[start : start + piece]
            fitted = _fit_window(context + continuation[:start], part, limit)
            groups.setdefault(tuple(fitted), []).append((index, part))
            pieces_left[index] += 1
    rows = sorted(groups.items(), key=lambda g: -_row_length(g[0], [part for _, part in g[1]]))
    totals: list[list] = [[0.0, True] for _ in requests]
    with torch.inference_mode():
        for batch in _batches(rows, batch_size, piece):
            items = [(list(context), [part for _, part in parts]) for context, parts in batch]
            owners = [index for _, parts in batch for index, _ in parts]
            finished = []
            for index, (logprob, greedy) in zip(owners, _score_rows(model, items)):
                totals[index] = [totals[index][0] + logprob, totals[index][1] and greedy]
                pieces_left[index] -= 1
                if pieces_left[index] == 0:
                    finished.append(index)
            if on_scored is not None and finished:
                on_scored(finished, [tuple(totals[i]) for i in finished])
    return [(total, greedy) for total, greedy in totals]


def _fit_window(context: list[int], continuation: list[int], limit: int) -> list[int]:
    if not context or not continuation:
        raise LmstackError("a loglikelihood request needs a non-empty context and continuation")
    if len(continuation) > limit:
        raise LmstackError(f"a continuation of {len(continuation)} tokens does not fit the model's "
                           f"{limit}-token window; shorten it")
    room = limit + 1 - len(continuation)  # the last continuation token is never fed
    return context[-room:]


def _row_length(context: Sequence[int], continuations: list[list[int]]) -> int:
    return len(context) + sum(len(c) - 1 for c in continuations)


def _batches(rows: list, batch_size: int, piece: int):
    """Consecutive rows: at most `batch_size` of them, and about `piece` scored positions."""
    batch, scored = [], 0
    for row in rows:
        size = sum(len(part) for _, part in row[1])
        if batch and (len(batch) == batch_size or scored + size > piece):
            yield batch
            batch, scored = [], 0
        batch.append(row)
        scored += size
    if batch:
        yield batch


class SharedContextAttention:
    """The model's `AttentionCache` for packed rows: [context | continuation 1 | continuation 2 ...].

    Every token sees the tokens before it in its own part and the whole context before it; a
    continuation never sees another. Positions restart after the context for each continuation,
    so the model computes what it would on context + continuation alone. Padding sees itself only.
    """

    def __init__(self, parts: torch.Tensor, positions: torch.Tensor):
        """parts [B, T]: 0 for the context, i for continuation i, -1 for padding; positions [B, T]."""
        index = torch.arange(parts.shape[1], device=parts.device)
        earlier = index[None, :, None] >= index[None, None, :]
        visible = (parts[:, None, :] == 0) | (parts[:, None, :] == parts[:, :, None])
        real = (parts[:, :, None] >= 0) & (parts[:, None, :] >= 0)
        self.mask = (earlier & visible & real) | (index[:, None] == index[None, :])
        self.positions = positions
        self.windowed: dict[int, torch.Tensor] = {}

    def position_ids(self) -> torch.Tensor:
        return self.positions

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None,
               scale: float) -> torch.Tensor:
        mask = self.mask
        if window is not None:  # a sliding-window layer: by position, which restarts per continuation
            if window not in self.windowed:
                distance = self.positions[:, :, None] - self.positions[:, None, :]
                self.windowed[window] = self.mask & (distance < window)
            mask = self.windowed[window]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=mask[:, None], scale=scale,
                                             enable_gqa=k.shape[2] != q.shape[2])
        return out.transpose(1, 2)


def _score_rows(model: torch.nn.Module, items: list[tuple[list[int], list[list[int]]]]) -> list[tuple[float, bool]]:
    """(log-prob, greedy) of every continuation of a few contexts, in one forward pass."""
    device = model.device  # the activations' (a quantized head has no float weight)
    width = max(_row_length(context, continuations) for context, continuations in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    parts = torch.full((len(items), width), -1, dtype=torch.long)
    positions = torch.zeros(len(items), width, dtype=torch.long)
    wanted = torch.zeros(len(items), width, dtype=torch.bool)
    scored: list[tuple[int, int, int, int]] = []  # (row, column whose logits predict it, token, request)
    request = 0
    for row, (context, continuations) in enumerate(items):
        end = len(context)
        ids[row, :end] = torch.tensor(context)
        parts[row, :end] = 0
        positions[row, :end] = torch.arange(end)
        wanted[row, end - 1] = True
        for part, continuation in enumerate(continuations, 1):
            fed = len(continuation) - 1  # the last token is predicted, never fed
            ids[row, end : end + fed] = torch.tensor(continuation[:-1], dtype=torch.long)
            parts[row, end : end + fed] = part
            positions[row, end : end + fed] = torch.arange(len(context), len(context) + fed)
            wanted[row, end : end + fed] = True
            columns = [len(context) - 1, *range(end, end + fed)]
            scored += [(row, column, token, request) for column, token in zip(columns, continuation)]
            end += fed
            request += 1
    attention = SharedContextAttention(parts.to(device), positions.to(device))
    logits = model(ids.to(device), cache=attention, logits_at=wanted.to(device))  # [N, V], row-major
    slot = (wanted.flatten().long().cumsum(0) - 1).view(wanted.shape)  # (row, column) -> row of `logits`
    rows, columns, tokens, owners = (torch.tensor(values) for values in zip(*scored))
    picked, tokens, owners = slot[rows, columns].to(device), tokens.to(device), owners.to(device)
    logprobs = logits.log_softmax(-1)[picked, tokens]
    misses = (logits.argmax(-1)[picked] != tokens).long()
    total = torch.zeros(request, device=device).index_add_(0, owners, logprobs)
    missed = torch.zeros(request, dtype=torch.long, device=device).index_add_(0, owners, misses)
    return list(zip(total.tolist(), (missed == 0).tolist()))


def rolling_windows(ids: Sequence[int], *, window: int, stride: int) -> list[Request]:
    """(context, continuation) windows that predict every token of `ids` after the first once.

    Windows of `window` tokens advance by `stride`; a token is scored in the first window that
    reaches it, with up to `window - stride` tokens of context before it (strided evaluation). A
    stride of the whole window advances by one token less, so no window starts without context.
    """
    if not 1 <= stride <= window:
        raise LmstackError(f"rolling windows need 1 <= stride <= window, got stride {stride} and window {window}")
    if window < 2:
        raise LmstackError(f"a rolling window needs at least 2 tokens, got {window}")
    step = min(stride, window - 1)  # every window after the first keeps at least one token of context
    windows, start, scored_until = [], 0, 1
    while scored_until < len(ids):
        end = min(start + window, len(ids))
        windows.append((list(ids[start:scored_until]), list(ids[scored_until:end])))
        start, scored_until = start + step, end
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
