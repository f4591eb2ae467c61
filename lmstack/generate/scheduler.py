"""Continuous batching: which sequences run in the next step, and with how many tokens each.

Every step the scheduler
1. keeps each running sequence that is decoding in the batch (one token, or one plus its draft
   tokens when speculating), finding a KV block for it when it crosses a block boundary; when
   no block is free it preempts the most recently admitted sequence (its blocks are freed and it
   goes back to the front of the queue, to be recomputed later: its blocks stay in the prefix
   cache, so the recomputation is often free);
2. fills the rest of the step's token budget with prompt chunks: sequences still reading their
   prompt first, then new requests in arrival order, as long as blocks and the running-sequence
   limit allow. A prompt longer than the budget is read over several steps (chunked prefill), so
   decoding sequences keep producing tokens meanwhile. Chunks end at multiples of the chunk size,
   whatever else is in the step, so a prompt is computed the same way in any batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lmstack.generate.kv_cache import BlockPool, block_hash, prefix_hashes


@dataclass
class Sequence:
    """One request's tokens and KV blocks as the engine runs it."""

    request: Any  # the engine's Request
    tokens: list[int]  # the prompt and every generated token the host has seen
    prompt_len: int
    arrival: int
    num_tokens: int = 0  # len(tokens) plus tokens sampled on the device the host has not read yet
    computed: int = 0  # tokens whose keys and values are in the cache
    blocks: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # prefix hashes of the full blocks registered so far
    generated: int = 0  # new tokens so far (read or not)
    prefilled: bool = False  # the last prompt token has been computed and a token sampled
    slot: int = -1  # row of the engine's per-sequence device state while running
    drafts: list[int] = field(default_factory=list)  # speculative tokens proposed for this step
    cached_tokens: int = 0  # prompt tokens found in the prefix cache at admission
    handle: Any = None  # the engine's RequestHandle
    generator: Any = None  # the request's own torch.Generator, when it has a seed
    draft_probs: Any = None  # a draft model's distributions for `drafts` [len(drafts), V]

    def __post_init__(self) -> None:
        self.num_tokens = len(self.tokens)

    @property
    def pending(self) -> int:
        """Tokens to feed before the next sample: the prompt (or its rest), else the last token."""
        return self.num_tokens - self.computed


@dataclass
class Scheduled:
    """One step: decoding sequences and prompt chunks (sequence, first position, end position)."""

    decode: list[Sequence]
    prefill: list[tuple[Sequence, int, int]]
    preempted: list[Sequence]

    @property
    def empty(self) -> bool:
        return not self.decode and not self.prefill


class Scheduler:
    def __init__(self, pool: BlockPool, block_size: int, max_batch_tokens: int, max_running: int):
        self.pool, self.block_size = pool, block_size
        self.max_batch_tokens, self.max_running = max_batch_tokens, max_running
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.prefix_queries = 0  # prompt blocks looked up in the prefix cache
        self.prefix_hits = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> Scheduled:
        """The next step. A decoding sequence's `drafts` are verified with it when blocks allow."""
        decode, preempted = [], []
        budget = self.max_batch_tokens
        for seq in list(self.running):
            if seq not in self.running or not seq.prefilled:
                continue
            while not self._grow(seq, seq.computed + 1 + len(seq.drafts)):
                if seq.drafts:  # drop the drafts before preempting anyone
                    seq.drafts = []
                    continue
                victim = self.running[-1]
                self.preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            if seq in self.running:
                decode.append(seq)
                budget -= 1 + len(seq.drafts)
        prefill = self._prefill_chunks(budget, preempted)
        return Scheduled(decode, prefill, preempted)

    def _prefill_chunks(self, budget: int, preempted: list[Sequence]) -> list[tuple[Sequence, int, int]]:
        chunks: list[tuple[Sequence, int, int]] = []
        candidates = [s for s in self.running if not s.prefilled] + [s for s in self.waiting if s not in preempted]
        for seq in candidates:
            waiting = seq not in self.running
            if waiting and (len(self.running) >= self.max_running or seq not in self.waiting):
                break
            if waiting:
                self._admit(seq)
            start = seq.computed
            # Chunks end on multiples of the chunk size, so they do not depend on the batch.
            end = min(seq.num_tokens, (start // self.max_batch_tokens + 1) * self.max_batch_tokens)
            # The first chunk always runs, so a long prompt is never starved by decoding sequences.
            fits = not chunks or end - start <= budget
            while fits and not waiting and not self._grow(seq, end) and self.running[-1] is not seq:
                victim = self.running[-1]  # a sequence admitted after this one makes room for it
                self.preempt(victim)
                preempted.append(victim)
            if not fits or not self._grow(seq, end):
                if waiting:
                    self._unadmit(seq)
                break
            if waiting and seq.generated == 0:  # a first admission, not a recomputation
                seq.cached_tokens = seq.computed
                self.prefix_queries += (seq.num_tokens - 1) // self.block_size
                self.prefix_hits += seq.computed // self.block_size
            chunks.append((seq, start, end))
            budget -= end - start
            if budget <= 0:
                break
        return chunks

    def _admit(self, seq: Sequence) -> None:
        """Move a waiting sequence to running, reusing cached blocks of its prompt's prefix."""
        self.waiting.remove(seq)
        self.running.append(seq)
        # Leave at least one token to compute: the last one gives the logits to sample from.
        hashes = prefix_hashes(seq.tokens[: seq.num_tokens - 1], self.block_size, seq.request.adapter)
        seq.blocks = self.pool.lookup(hashes)
        seq.hashes = hashes[: len(seq.blocks)]
        seq.computed = len(seq.blocks) * self.block_size

    def _unadmit(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        self._free(seq)

    def _grow(self, seq: Sequence, length: int) -> bool:
        """Give `seq` blocks for `length` tokens; False (and no change) when too few are free."""
        needed = -(-length // self.block_size) - len(seq.blocks)
        if needed > self.pool.num_free:
            return False
        seq.blocks.extend(self.pool.allocate() for _ in range(max(needed, 0)))
        return True

    def preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks and queue it first, to recompute when there is room."""
        self.running.remove(seq)
        self._free(seq)
        seq.prefilled = False
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._free(seq)

    def _free(self, seq: Sequence) -> None:
        self.pool.release(seq.blocks)
        seq.blocks, seq.hashes, seq.computed = [], [], 0

    def register_full_blocks(self, seq: Sequence) -> None:
        """Enter the blocks that are now full of computed, known tokens into the prefix cache."""
        full = min(seq.computed, len(seq.tokens)) // self.block_size
        while len(seq.hashes) < full:
            i = len(seq.hashes)
            parent = seq.hashes[-1] if seq.hashes else None
            tokens = tuple(seq.tokens[i * self.block_size:(i + 1) * self.block_size])
            seq.hashes.append(block_hash(parent, tokens, seq.request.adapter))
            self.pool.register(seq.blocks[i], seq.hashes[-1])
