"""Supervised fine-tuning: teach a model to answer like the dataset's assistant.

The loss is the cross-entropy of each next token, over the tokens the assistant wrote only
(labels are -100 on the prompt, the system message and padding). With packing, several
conversations share one row and attend only within themselves (segment ids), so no compute is
spent on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmstack.data import IGNORE_INDEX, collate_rows, pack_rows, pad_batch
from lmstack.hub.load import ModelBundle
from lmstack.train.core import Batch, Plan
from lmstack.train.recipe import Recipe
from lmstack.train.samples import pad_token_id, scored_positions, sft_samples, split_validation


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


def plan(bundle: ModelBundle, recipe: Recipe) -> Plan:
    """The SFT plan: the recipe's chat or text data, packed into rows or padded per batch."""
    data, pad = recipe.data, pad_token_id(bundle.tokenizer)
    train_samples = sft_samples(bundle.tokenizer, data.train, data)
    if data.val:
        val_samples = sft_samples(bundle.tokenizer, data.val, data)
    else:
        train_samples, val_samples = split_validation(train_samples, data.val_fraction, recipe.run.seed)
    if data.packing:
        def rows(samples: list) -> list:
            return pack_rows(samples, data.max_len, overlong="truncate") if samples else []

        return Plan(NextTokenLoss(), rows(train_samples), rows(val_samples),
                    lambda batch: collate_rows(batch, data.max_len, pad))
    return Plan(NextTokenLoss(), train_samples, val_samples, lambda batch: pad_batch(batch, pad_token_id=pad))
