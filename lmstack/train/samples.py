"""The data a recipe names, read and tokenized into samples a training loop can batch.

A dataset reference is a file path or `lmstack:NAME` for a shipped dataset (see
`lmstack.data.dataset_path`). Chat records become conversations trained on the assistant's tokens
only; raw text records are trained on every token; preference and KTO records become pairs or
single completions (see `preference.py`).
"""

from __future__ import annotations

from typing import Any

import torch

from lmstack.data import IGNORE_INDEX, TokenizedSample, dataset_path, load_dataset, tokenize_conversation, tokenize_text
from lmstack.errors import LmstackError
from lmstack.inputs import check_file
from lmstack.train.recipe import DataSection, Recipe


def check_dataset_files(recipe: Recipe) -> None:
    """The recipe's dataset files exist and hold data (before any model loads)."""
    for ref in filter(None, (recipe.data.train, recipe.data.val)):
        check_file(dataset_path(ref), "dataset")
    if not recipe.data.train:
        raise LmstackError("the recipe names no training data; set data.train (a file or lmstack:NAME)")


def sft_samples(tokenizer: Any, ref: str, data: DataSection) -> list[TokenizedSample]:
    """Chat or text records tokenized with labels; samples with nothing left to train are dropped."""
    dataset = load_dataset(ref)
    if dataset.kind == "messages":
        samples = [tokenize_conversation(tokenizer, r["messages"], template=data.template, max_len=data.max_len)
                   for r in dataset.records]
    elif dataset.kind == "text":
        samples = [tokenize_text(tokenizer, r["text"], max_len=data.max_len) for r in dataset.records]
    else:
        raise LmstackError(f"{ref} holds {dataset.kind} records; SFT needs chat (messages) or text records")
    trainable = [s for s in samples if s.num_trained > 0]
    if not trainable:
        raise LmstackError(f"no sample of {ref} has an assistant answer to train on within data.max_len="
                           f"{data.max_len}; check that the records hold assistant turns, or raise max_len")
    return trainable


def split_validation(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded random `fraction` of the samples held out (at least one)."""
    if fraction <= 0:
        return samples, []
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = max(1, round(fraction * len(samples)))
    return [samples[i] for i in order[held_out:]], [samples[i] for i in order[:held_out]]


def scored_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: position t is scored when token t + 1 is trained (for `model(logits_at=...)`)."""
    at = torch.zeros_like(labels, dtype=torch.bool)
    at[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return at


def pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0
