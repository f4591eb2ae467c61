"""The paged KV cache: fixed-size blocks of keys and values, block tables, prefix caching.

Memory for keys and values is one tensor cut into blocks of `block_size` token slots, sized once
from a memory budget. A sequence owns a list of blocks (its block table) that grows one block at
a time, so nothing is reserved for a request's maximum length, and sequences of any length pack
into the same pool (vLLM's PagedAttention).

Prefix caching: a full block is identified by a hash of its parent block's hash, its tokens and
the adapter that computed it, so a hash names a whole prefix. Finished sequences give their
blocks back with the hashes kept; a later prompt that starts with the same tokens finds them and
skips computing them. Free blocks are reused least-recently-freed first, and a reused block loses
its old hash.

`PagedBatch` is what the model's attention calls during one engine step (the `AttentionCache`
protocol of `lmstack.model.transformer`): it writes the step's new keys and values into their
slots and attends over each sequence's blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from lmstack.model.config import ModelConfig

# Decode attention sums probabilities x values in fixed chunks of this many keys, so a row's
# result does not depend on how far other rows in its batch pad the keys (batch invariance).
ATTENTION_CHUNK = 64
NULL_BLOCK = 0  # always zero; pads block tables of shorter rows


def block_hash(parent: int | None, tokens: tuple[int, ...], adapter: str | None) -> int:
    """The prefix-cache key of a full block: its parent's hash, its tokens and its adapter."""
    return hash((parent, tokens, adapter))


def prefix_hashes(tokens: list[int], block_size: int, adapter: str | None) -> list[int]:
    """The hash of every full block of `tokens`, each one chaining all blocks before it."""
    hashes: list[int] = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        hashes.append(block_hash(hashes[-1] if hashes else None, tuple(tokens[start:start + block_size]), adapter))
    return hashes


class BlockPool:
    """Which blocks are free, how many sequences share each, and which prefix each one holds."""

    def __init__(self, num_blocks: int, on_first_use: Callable[[int], None] = lambda block: None):
        self.num_blocks, self.on_first_use = num_blocks, on_first_use
        self.refs = [0] * num_blocks
        self.refs[NULL_BLOCK] = 1  # never handed out
        self.hash_of: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # prefix hash -> block holding it
        # Free blocks, least recently freed first (the LRU order for evicting cached prefixes).
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(1, num_blocks))
        self.never_used = set(range(1, num_blocks))  # blocks whose memory was never initialised

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self) -> int | None:
        """A free block (evicting the prefix it cached, if any), or None when there is none."""
        if not self.free:
            return None
        block, _ = self.free.popitem(last=False)
        if block in self.never_used:
            self.never_used.discard(block)
            self.on_first_use(block)
        old = self.hash_of[block]
        if old is not None:
            if self.cached.get(old) == block:
                del self.cached[old]
            self.hash_of[block] = None
        self.refs[block] = 1
        return block

    def release(self, blocks: list[int]) -> None:
        """Drop one reference to each block; unreferenced blocks become free but keep their prefix."""
        for block in reversed(blocks):  # the tail of a sequence is the least likely to be shared: evict it first
            self.refs[block] -= 1
            if self.refs[block] == 0:
                self.free[block] = None

    def share(self, blocks: list[int]) -> list[int]:
        """One more reference to each block (a forked sequence starts with its parent's blocks)."""
        for block in blocks:
            self.refs[block] += 1
        return list(blocks)

    def lookup(self, hashes: list[int]) -> list[int]:
        """The blocks caching the longest run of `hashes`, each now referenced once more."""
        found = []
        for h in hashes:
            block = self.cached.get(h)
            if block is None:
                break
            if self.refs[block] == 0:
                del self.free[block]
            self.refs[block] += 1
            found.append(block)
        return found

    def register(self, block: int, h: int) -> None:
        """Record that `block` now holds the full block whose prefix hash is `h`."""
        if self.hash_of[block] is None and h not in self.cached:
            self.cached[h] = block
            self.hash_of[block] = h

    def cached_blocks(self) -> int:
        return len(self.cached)


class KVStore:
    """The key and value tensors of every layer: [layers, 2, kv heads, blocks, block_size, head_dim]."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, device: torch.device,
                 dtype: torch.dtype):
        self.block_size = block_size
        self.num_kv_heads, self.head_dim = config.num_kv_heads, config.head_dim
        shape = (config.num_layers, 2, config.num_kv_heads, num_blocks, block_size, config.head_dim)
        # Empty, not zeros: pages are only touched as blocks are used. Blocks are zeroed on first
        # use, since attention multiplies masked slots' values by a probability of exactly 0.
        self.data = torch.empty(shape, device=device, dtype=dtype)
        self.data[:, :, :, NULL_BLOCK].zero_()

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        return 2 * config.num_layers * config.num_kv_heads * block_size * config.head_dim * dtype.itemsize

    def zero(self, block: int) -> None:
        self.data[:, :, :, block] = 0

    def copy(self, source: int, target: int) -> None:
        self.data[:, :, :, target] = self.data[:, :, :, source]

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys and values [N, K, D] at flat slot indices [N]."""
        kv = self.data[layer].view(2, self.num_kv_heads, -1, self.head_dim)
        kv[0][:, slots] = k.transpose(0, 1)
        kv[1][:, slots] = v.transpose(0, 1)

    def gather(self, layer: int, block_tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of each row's blocks, [K, B, blocks x block_size, D] each."""
        kv = self.data[layer][:, :, block_tables]  # [2, K, B, nb, bs, D]
        shape = (self.num_kv_heads, block_tables.shape[0], -1, self.head_dim)
        return kv[0].view(shape), kv[1].view(shape)


@dataclass
class RowGroup:
    """Consecutive rows of one step that each bring `tokens` new tokens (decode: 1).

    A prefill group is one sequence's chunk of prompt; it attends over its exact keys with SDPA.
    Other groups (decode, speculative verification) attend over block tables padded to a multiple
    of ATTENTION_CHUNK keys, with a mask.
    """

    start: int  # index of the group's first token in the flat step
    rows: int
    tokens: int
    lengths: list[int]  # tokens each row has in the cache after this step
    block_tables: torch.Tensor  # [rows, blocks], padded with NULL_BLOCK
    prefill: bool = False
    masks: dict[int | None, torch.Tensor] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + self.rows * self.tokens

    def mask(self, window: int | None, keys: int) -> torch.Tensor:
        """[rows, tokens, keys] True where a query may attend (causal, within the window)."""
        if window not in self.masks:
            device = self.block_tables.device
            context = torch.tensor(self.lengths, device=device)
            key_pos = torch.arange(keys, device=device)
            query_pos = (context - self.tokens)[:, None] + torch.arange(self.tokens, device=device)
            allowed = key_pos[None, None, :] <= query_pos[:, :, None]
            if window is not None:
                allowed &= query_pos[:, :, None] - key_pos[None, None, :] < window
            self.masks[window] = allowed
        return self.masks[window]


class PagedBatch:
    """One engine step's view of the cache: where each new token goes and what it attends to.

    The step's tokens are flattened into one row ([1, N]); `groups` say which consecutive tokens
    belong to which sequences.
    """

    def __init__(self, store: KVStore, positions: torch.Tensor, slots: torch.Tensor, groups: list[RowGroup]):
        self.store, self.positions, self.slots, self.groups = store, positions, slots, groups

    def position_ids(self) -> torch.Tensor:
        return self.positions[None]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None,
               scale: float) -> torch.Tensor:
        self.store.write(layer, self.slots, k[0], v[0])
        q = q[0]  # [N, H, D]
        out = torch.empty_like(q)
        for g in self.groups:
            keys, values = self.store.gather(layer, g.block_tables)
            attention = _prefill_attention if g.prefill else _decode_attention
            out[g.start:g.end] = attention(q[g.start:g.end], keys, values, g, window, scale)
        return out[None]


def _prefill_attention(q, keys, values, g: RowGroup, window, scale) -> torch.Tensor:
    """One sequence's chunk of new tokens over its exact keys (SDPA: flash attention on CPU and GPU)."""
    T, H, _ = q.shape
    S = g.lengths[0]
    keys, values = keys[:, 0, :S], values[:, 0, :S]  # [K, S, D]
    mask = None if S == T and window is None else g.mask(window, S)[0]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], keys[None], values[None], attn_mask=mask, is_causal=mask is None,
        scale=scale, enable_gqa=keys.shape[0] != H,
    )
    return out[0].transpose(0, 1)


def _decode_attention(q, keys, values, g: RowGroup, window, scale) -> torch.Tensor:
    """Rows of a few new tokens each over their padded blocks, in fp32, batch-invariant.

    Written out rather than SDPA: every reduction here runs over a length that does not depend on
    the other rows (the head dim, or fixed chunks of ATTENTION_CHUNK keys, with padding adding
    exact zeros), so a row gets the same numbers alone or in any batch.
    """
    K, B, S, D = keys.shape
    H, T = q.shape[1], g.tokens
    G, chunks = H // K, S // ATTENTION_CHUNK
    # [B*T, H, D] -> [K, B, G*T, D]: the G query heads of each kv head, for each new token
    q = q.float().view(B, T, K, G, D).permute(2, 0, 3, 1, 4).reshape(K, B, G * T, D)
    scores = torch.matmul(q, keys.float().transpose(-1, -2)) * scale  # [K, B, G*T, S]
    allowed = g.mask(window, S)  # [B, T, S]
    scores = scores.view(K, B, G, T, S).masked_fill(~allowed[None, :, None], float("-inf"))
    probs = scores.softmax(-1).view(K, B, G * T, chunks, ATTENTION_CHUNK).transpose(2, 3)
    out = torch.matmul(probs, values.float().view(K, B, chunks, ATTENTION_CHUNK, D)).sum(2)  # [K, B, G*T, D]
    return out.view(K, B, G, T, D).permute(1, 3, 0, 2, 4).reshape(B * T, H, D).to(keys.dtype)
