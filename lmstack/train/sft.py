"""Supervised fine-tuning: teach a model to answer like the dataset's assistant.

The loss is the cross-entropy of each next token, over the tokens the assistant wrote only
(labels are -100 on the prompt, the system message and padding). With packing, several
conversations share one row and attend only within themselves (segment ids), so no compute is
spent on padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmstack.data import IGNORE_INDEX
from lmstack.train.core import Batch, TrainResult, train
from lmstack.train.method import load_base, prepare_model, save_result
from lmstack.train.recipe import Recipe
from lmstack.train.samples import pack_rows, pad_token_id, scored_positions, sft_samples, split_validation, stack_rows


class NextTokenLoss:
    """Masked cross-entropy summed over trained tokens; averaged by the loop over the global batch."""

    def count(self, batch: Batch) -> int:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        at = scored_positions(batch["labels"])
        logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                       position_ids=batch.get("position_ids"), segment_ids=batch.get("segment_ids"), logits_at=at)
        targets = batch["labels"][:, 1:][at[:, :-1]]  # position t predicts token t + 1
        return F.cross_entropy(logits, targets, reduction="sum"), {}


@dataclass
class SFTResult:
    output: Path | None  # the adapter or model directory (None on non-main processes)
    train: TrainResult


def sft_data(tokenizer: Any, recipe: Recipe) -> tuple[list, list, Any]:
    """(train samples, validation samples, collate) for the recipe's data section."""
    pad = pad_token_id(tokenizer)
    train_samples = sft_samples(tokenizer, recipe.data.train, recipe.data)
    if recipe.data.val:
        val_samples = sft_samples(tokenizer, recipe.data.val, recipe.data)
    else:
        train_samples, val_samples = split_validation(train_samples, recipe.data.val_fraction, recipe.run.seed)
    if recipe.data.packing:
        def pack(samples: list) -> list:
            return pack_rows(samples, recipe.data.max_len, pad) if samples else []

        return pack(train_samples), pack(val_samples), stack_rows
    from lmstack.data import pad_batch

    return train_samples, val_samples, lambda samples: pad_batch(samples, pad_token_id=pad)


def train_sft(recipe: Recipe, *, resume: bool = False, loaded=None) -> SFTResult:
    """Fine-tune `recipe.model.ref` (or an already `loaded` model) on `recipe.data.train`."""
    loaded = loaded or load_base(recipe)
    train_samples, val_samples, collate = sft_data(loaded.tokenizer, recipe)
    prepare_model(loaded.model, recipe)
    result = train(loaded.model, NextTokenLoss(), train_samples, collate, optimizer=recipe.optimizer,
                   run=recipe.run, val_samples=val_samples, device=recipe.model.device,
                   gradient_checkpointing=recipe.model.gradient_checkpointing, precision=recipe.model.precision,
                   resume=resume)
    return SFTResult(save_result(loaded, loaded.model, recipe, result, "sft"), result)
