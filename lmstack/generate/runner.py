"""One forward pass of the model over a step's sequences, on the paged KV cache.

The step's new tokens are laid out in one flat row: decoding sequences first, grouped by how
many tokens each brings (one, or one plus draft tokens to verify), then each prompt chunk. The
runner builds that row, the positions, the cache slot of every token and the block tables, runs
the model once, and returns the logits the engine samples from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import groupby

import torch

from lmstack.generate.kv_cache import ATTENTION_CHUNK, NULL_BLOCK, KVStore, PagedBatch, RowGroup


@dataclass
class Feed:
    """What one sequence feeds in a step; `from_device` takes the first token from the device."""

    blocks: list[int]
    start: int  # position of the first fed token
    tokens: list[int]  # host tokens (the first one is a placeholder when from_device)
    from_device: int | None  # row of the device token buffer holding the first token
    logits: str  # "all" positions, the "last" one, or "none"
    adapter: str | None = None
    prefill: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


@dataclass
class Logits:
    """The forward's logits and, per feed, the range of rows that belong to it."""

    values: torch.Tensor  # [rows, vocab] fp32
    rows: list[slice]  # one per feed, in the order the feeds were given


class ModelRunner:
    def __init__(self, model: torch.nn.Module, store: KVStore, batch_invariant: bool = False):
        self.model, self.store = model, store
        # Matrix libraries multiply a single row another way (a matrix-vector kernel) that rounds
        # differently from the many-row one, so a sequence decoding alone gets other numbers than
        # in a batch (bf16 at SmolLM2's widths: a flipped last bit every few steps). When asked,
        # a lone token runs with a twin that writes the same keys and values: bit-identical
        # results, for ~10% more time in a CPU's bf16 matmuls and, in a microbenchmark, 3x in
        # fp32 ones (MKL's two-row path); see EngineConfig.batch_invariant.
        self.batch_invariant = batch_invariant
        self.block_size = store.block_size
        self.device = store.data.device
        # Decode rows attend in one padded batch on a GPU, one exact call per row on a CPU.
        self.padded_attention = self.device.type != "cpu"

    def forward(self, feeds: list[Feed], device_tokens: torch.Tensor | None = None, lora=None) -> Logits:
        """Run `feeds` (decode feeds before prefill feeds) through the model in one pass."""
        if self.batch_invariant and len(feeds) == 1 and len(feeds[0].tokens) == 1:
            feeds = [feeds[0], replace(feeds[0], logits="none")]  # a twin: see __init__
        order = sorted(range(len(feeds)), key=lambda i: (feeds[i].prefill, len(feeds[i].tokens)))
        ids, positions, slots, logits_at, from_device = [], [], [], [], []
        groups: list[RowGroup] = []
        position_of: dict[int, int] = {}
        for (prefill, width), members in groupby(order, key=lambda i: (feeds[i].prefill, len(feeds[i].tokens))):
            members = list(members)
            batches = [[m] for m in members] if prefill else [members]
            for batch in batches:
                groups.append(self._group(len(ids), [feeds[i] for i in batch], width, prefill))
                for i in batch:
                    f = feeds[i]
                    position_of[i] = len(ids)
                    if f.from_device is not None:
                        from_device.append((len(ids), f.from_device))
                    ids.extend(f.tokens)
                    positions.extend(range(f.start, f.end))
                    slots.extend(f.blocks[p // self.block_size] * self.block_size + p % self.block_size
                                 for p in range(f.start, f.end))
                    n = len(f.tokens)
                    logits_at.extend([f.logits == "all"] * (n - 1) + [f.logits != "none"])
        ids_t = torch.tensor(ids, device=self.device)
        if from_device:
            at, rows = zip(*from_device)
            ids_t[list(at)] = device_tokens[list(rows)]
        batch = PagedBatch(self.store, torch.tensor(positions, device=self.device),
                           torch.tensor(slots, device=self.device), groups, self.padded_attention)
        if lora is not None:
            lora.prepare([(position_of[i], feeds[i].end - feeds[i].start, feeds[i].adapter) for i in order])
        try:
            with torch.inference_mode():
                values = self.model(ids_t[None], cache=batch,
                                    logits_at=torch.tensor(logits_at, device=self.device)[None])
        finally:
            if lora is not None:
                lora.done()
        return Logits(values, self._logit_rows(feeds, order, position_of))

    def _group(self, start: int, feeds: list[Feed], width: int, prefill: bool) -> RowGroup:
        lengths = [f.end for f in feeds]
        blocks = -(-max(lengths) // self.block_size)
        if not prefill and self.padded_attention:  # padded attention reads whole chunks of keys
            per_chunk = max(ATTENTION_CHUNK // self.block_size, 1)
            blocks = -(-blocks // per_chunk) * per_chunk
        table = [f.blocks[:blocks] + [NULL_BLOCK] * (blocks - len(f.blocks[:blocks])) for f in feeds]
        return RowGroup(start, len(feeds), width, lengths, torch.tensor(table, device=self.device), prefill)

    @staticmethod
    def _logit_rows(feeds: list[Feed], order: list[int], position_of: dict[int, int]) -> list[slice]:
        rows: list[slice] = [slice(0, 0)] * len(feeds)
        row = 0
        for i in order:
            n = {"all": len(feeds[i].tokens), "last": 1, "none": 0}[feeds[i].logits]
            rows[i] = slice(row, row + n)
            row += n
        return rows
