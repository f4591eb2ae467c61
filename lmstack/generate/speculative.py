"""Speculative decoding: guess a few tokens cheaply, check them all in one forward of the model.

A drafter proposes up to k tokens after a sequence's last one; the model then reads the last
token and the k drafts in one step (as cheap as one decode step when reading weights dominates)
and `verify` keeps the longest run the model agrees with, plus one token of its own. Two drafters:
- prompt lookup (n-gram): find the sequence's last n tokens earlier in the sequence and propose
  what followed them there; free, and good when the output copies the input (RAG, edits, code);
- a draft model: a smaller model with the same vocabulary decodes k tokens autoregressively.

The acceptance rule (Leviathan et al., 2023; Chen et al., 2023) keeps the model's distribution
exact: accept draft x with probability min(1, p(x) / q(x)), and on rejection sample from the
normalised max(0, p - q). With greedy decoding that is: accept while the draft equals the argmax,
so the output is the one plain greedy decoding gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmstack.errors import LmstackError
from lmstack.generate.kv_cache import BlockPool, KVStore
from lmstack.generate.runner import Feed, ModelRunner

DRAFTERS = ("ngram", "draft")


@dataclass
class SpeculativeConfig:
    """`method` "ngram" (prompt lookup) or "draft" (a draft model, given as `draft_model`)."""

    method: str = "ngram"
    num_tokens: int = 4  # k: tokens proposed per step
    ngram_max: int = 3  # prompt lookup matches the last n tokens, n from ngram_max down to ngram_min
    ngram_min: int = 1
    draft_model: Any = None  # a Transformer sharing the target's vocabulary
    # Speculate only while at most this many sequences decode: verifying k+1 tokens per sequence
    # is nearly free while reading the weights dominates a step (small batches), not in big ones.
    max_batch: int = 4

    def __post_init__(self) -> None:
        if self.method not in DRAFTERS:
            raise LmstackError(f"unknown speculative method '{self.method}'; use one of {', '.join(DRAFTERS)}")
        if not 1 <= self.num_tokens <= 16:
            raise LmstackError(f"speculative num_tokens must be in [1, 16], got {self.num_tokens}")
        if not 1 <= self.ngram_min <= self.ngram_max <= 8:
            raise LmstackError(f"need 1 <= ngram_min <= ngram_max <= 8, got {self.ngram_min} and {self.ngram_max}")
        if not 1 <= self.max_batch <= 4096:
            raise LmstackError(f"speculative max_batch must be in [1, 4096], got {self.max_batch}")
        if self.method == "draft" and self.draft_model is None:
            raise LmstackError("speculative method 'draft' needs a draft_model (a smaller model with the same vocabulary)")


def lookup_ngram(tokens: list[int], k: int, n_max: int, n_min: int) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the sequence's last n tokens."""
    for n in range(min(n_max, len(tokens) - 1), n_min - 1, -1):
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):  # latest match first
            if tokens[start:start + n] == tail:
                return tokens[start + n:start + n + k]
    return []


class DraftModel:
    """A small model proposing tokens, with its own paged cache that follows each sequence."""

    def __init__(self, model: torch.nn.Module, num_blocks: int, block_size: int):
        self.store = KVStore(model.config, num_blocks, block_size, model.device, model.dtype)
        self.pool = BlockPool(num_blocks, on_first_use=self.store.zero)
        self.runner = ModelRunner(model, self.store)
        self.block_size = block_size
        self.state: dict[int, tuple[list[int], int]] = {}  # id(seq) -> (blocks, tokens computed)

    def propose(self, seqs: list[Any], k: int, score) -> tuple[dict[int, list[int]], dict[int, torch.Tensor]]:
        """Draft tokens for each sequence, and for sampled ones the draft distributions [n, V].

        `score(seq, logits [n, V]) -> (tokens [n], probabilities [n, V] or None)` picks the draft
        tokens the way the sequence samples.
        """
        drafts: dict[int, list[int]] = {id(s): [] for s in seqs}
        probs: dict[int, list[torch.Tensor]] = {id(s): [] for s in seqs}
        # First round: catch up on every token the draft has not read (the prompt, accepted tokens).
        feeds = {id(s): self._feed(s, s.tokens[self.state.get(id(s), ([], 0))[1]:]) for s in seqs}
        for _ in range(k):
            live = [s for s in seqs if feeds[id(s)] is not None]
            if not live:
                break
            logits = self.runner.forward([feeds[id(s)] for s in live])
            for i, s in enumerate(live):
                blocks, computed = self.state[id(s)]
                self.state[id(s)] = (blocks, feeds[id(s)].end)
                token, p = score(s, logits.values[logits.rows[i]])
                drafts[id(s)].append(int(token))
                if p is not None:
                    probs[id(s)].append(p)
                feeds[id(s)] = self._feed(s, [int(token)])
        return drafts, {key: torch.stack(value) for key, value in probs.items() if value}

    def _feed(self, seq: Any, tokens: list[int]) -> Feed | None:
        blocks, computed = self.state.setdefault(id(seq), ([], 0))
        end = computed + len(tokens)
        needed = -(-end // self.block_size) - len(blocks)
        if not tokens or needed > self.pool.num_free:
            return None
        blocks.extend(self.pool.allocate() for _ in range(needed))
        return Feed(blocks, computed, tokens, None, "last", prefill=len(tokens) > 1)

    def rollback(self, seq: Any, length: int) -> None:
        """Forget draft keys past `length` tokens (rejected drafts)."""
        if id(seq) in self.state:
            blocks, computed = self.state[id(seq)]
            self.state[id(seq)] = (blocks, min(computed, length))

    def release(self, seq: Any) -> None:
        blocks, _ = self.state.pop(id(seq), ([], 0))
        self.pool.release(blocks)


def verify(logits: torch.Tensor, drafts: list[int], draft_probs: torch.Tensor | None, greedy: bool,
           generator: torch.Generator | None) -> list[int]:
    """The tokens a sequence gains from one verification step: accepted drafts plus one more.

    logits: [len(drafts) + 1, V], the processed scores at the last token and at each draft.
    draft_probs: [len(drafts), V] the draft model's distributions, or None for a deterministic
    proposal (prompt lookup: q is 1 on the proposed token).
    """
    if greedy:
        best = logits.argmax(-1).tolist()
        n = 0
        while n < len(drafts) and drafts[n] == best[n]:
            n += 1
        return drafts[:n] + [best[n]]
    p = logits.softmax(-1)
    uniforms = torch.rand(len(drafts), generator=generator, device=p.device).tolist()
    for i, token in enumerate(drafts):
        q_token = float(draft_probs[i, token]) if draft_probs is not None else 1.0
        if uniforms[i] < min(1.0, float(p[i, token]) / q_token):
            continue
        if draft_probs is not None:
            residual = (p[i] - draft_probs[i]).clamp(min=0)
        else:
            residual = p[i].clone()
            residual[token] = 0
        if float(residual.sum()) <= 0:  # p equals q: any draw from p is exact
            residual = p[i]
        return drafts[:i] + [int(torch.multinomial(residual / residual.sum(), 1, generator=generator))]
    return drafts + [int(torch.multinomial(p[len(drafts)], 1, generator=generator))]
