"""Batching tokenized samples: packing many into fixed-length rows, or padding a few.

Packing puts several samples side by side in one row so no compute is spent on padding. The model
must still see each sample alone, so every row carries:
- `position_ids` that restart at 0 for each sample (rotary positions as if it were alone),
- `segment_ids` 1..k numbering the samples in the row (0 = padding); attention stays within a
  segment,
- `labels` with the first token of each sample set to -100: the loss predicts token t+1 from
  position t, and the last token of one sample must not be asked to predict the next sample.
With these, a packed row gives the same per-token losses as its samples run one by one.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import torch

from lmstack.data.templating import IGNORE_INDEX, TokenizedSample
from lmstack.errors import LmstackError

STRATEGIES = ("best_fit", "sequential")


PackedRow = list[TokenizedSample]  # samples that share one row, in order


def pack_rows(samples: Sequence[TokenizedSample], seq_len: int, *, strategy: str = "best_fit",
              overlong: str = "error") -> list[PackedRow]:
    """Decide which samples share each row of `seq_len` tokens (no tensors yet: `collate_rows` makes them).

    strategy: `best_fit` places the longest samples first, each in the fullest row it fits
    (fewest rows); `sequential` keeps the dataset order and opens a new row when one is full.
    overlong: a sample longer than `seq_len` is never split across rows; `error` refuses it,
    `truncate` cuts it to `seq_len`.
    """
    if strategy not in STRATEGIES:
        raise LmstackError(f"Unknown packing strategy '{strategy}'; use one of {', '.join(STRATEGIES)}.")
    samples = [_fit(sample, seq_len, overlong, index) for index, sample in enumerate(samples) if len(sample)]
    return _best_fit(samples, seq_len) if strategy == "best_fit" else _sequential(samples, seq_len)


def pack_samples(samples: Sequence[TokenizedSample], seq_len: int, *, pad_token_id: int = 0,
                 strategy: str = "best_fit", overlong: str = "error") -> dict[str, torch.Tensor]:
    """Every sample packed: `input_ids`, `labels`, `position_ids`, `segment_ids`, each [rows, seq_len]."""
    return collate_rows(pack_rows(samples, seq_len, strategy=strategy, overlong=overlong), seq_len, pad_token_id)


def pad_batch(samples: Sequence[TokenizedSample], *, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad samples to the longest one: `input_ids`, `labels` (-100 on padding), `attention_mask`."""
    width = max(len(sample) for sample in samples)
    batch = {"input_ids": torch.full((len(samples), width), pad_token_id, dtype=torch.long),
             "labels": torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long),
             "attention_mask": torch.zeros((len(samples), width), dtype=torch.long)}
    for row, sample in enumerate(samples):
        n = len(sample)
        batch["input_ids"][row, :n] = torch.tensor(sample.input_ids)
        batch["labels"][row, :n] = torch.tensor(sample.labels)
        batch["attention_mask"][row, :n] = 1
    return batch


def _fit(sample: TokenizedSample, seq_len: int, overlong: str, index: int) -> TokenizedSample:
    if len(sample) <= seq_len:
        return sample
    if overlong == "truncate":
        return TokenizedSample(sample.input_ids[:seq_len], sample.labels[:seq_len], truncated=True)
    if overlong == "error":
        raise LmstackError(f"Sample {index} has {len(sample)} tokens, more than the packing length {seq_len}; "
                           "raise the length, pass overlong='truncate', or drop long samples.")
    raise LmstackError(f"Unknown overlong policy '{overlong}'; use 'error' or 'truncate'.")


def _best_fit(samples: list[TokenizedSample], seq_len: int) -> list[list[TokenizedSample]]:
    """Best-fit decreasing: a sorted list of (free space, row) finds the tightest row by bisection."""
    rows: list[list[TokenizedSample]] = []
    free: list[tuple[int, int]] = []
    for sample in sorted(samples, key=len, reverse=True):
        at = bisect.bisect_left(free, (len(sample), -1))
        if at == len(free):
            rows.append([sample])
            space, row = seq_len - len(sample), len(rows) - 1
        else:
            space, row = free.pop(at)
            rows[row].append(sample)
            space -= len(sample)
        bisect.insort(free, (space, row))
    return rows


def _sequential(samples: list[TokenizedSample], seq_len: int) -> list[list[TokenizedSample]]:
    rows: list[list[TokenizedSample]] = []
    used = seq_len  # forces a first row
    for sample in samples:
        if used + len(sample) > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(sample)
        used += len(sample)
    return rows


def collate_rows(rows: Sequence[PackedRow], seq_len: int, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of packed rows, each [len(rows), seq_len] (a training batch, or every row)."""
    shape = (len(rows), seq_len)
    batch = {"input_ids": torch.full(shape, pad_token_id, dtype=torch.long),
             "labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long),
             "position_ids": torch.zeros(shape, dtype=torch.long),
             "segment_ids": torch.zeros(shape, dtype=torch.long)}
    for r, row in enumerate(rows):
        start = 0
        for segment, sample in enumerate(row, start=1):
            end = start + len(sample)
            batch["input_ids"][r, start:end] = torch.tensor(sample.input_ids)
            batch["labels"][r, start + 1:end] = torch.tensor(sample.labels[1:])
            batch["position_ids"][r, start:end] = torch.arange(len(sample))
            batch["segment_ids"][r, start:end] = segment
            start = end
    return batch
