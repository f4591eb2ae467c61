"""Perplexity of a model on raw text, with a sliding window for text longer than the context."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def perplexity(loaded, text: str, *, window: int = 512, stride: int = 256) -> float:
    """exp(mean negative log-likelihood) of every token of `text` after the first (as transformers' loss).

    Windows of `window` tokens advance by `stride`; each token is scored once, with up to
    `window - stride` tokens of context before it (the usual strided evaluation).
    """
    ids = loaded.tokenizer.encode(text)  # with BOS only where the model's tokenizer adds one
    tokens = torch.tensor(ids, device=loaded.device)
    window = min(window, loaded.config.max_position_embeddings)
    total_nll, counted, scored_until = 0.0, 0, 1
    with torch.inference_mode():
        for start in range(0, max(len(ids) - 1, 1), stride):
            end = min(start + window, len(ids))
            logits = loaded.model(tokens[start:end][None])[0, :-1]
            targets = tokens[start + 1 : end]
            nll = F.cross_entropy(logits.float(), targets, reduction="none")
            fresh = nll[scored_until - start - 1 :]  # only tokens no earlier window scored
            total_nll += fresh.sum().item()
            counted += fresh.numel()
            scored_until = end
            if end == len(ids):
                break
    return math.exp(total_nll / max(counted, 1))
