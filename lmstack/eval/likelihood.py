"""Likelihood of text under a model: perplexity, with a sliding window for text longer than the context."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lmstack.data import dataset_path
from lmstack.errors import LmstackError
from lmstack.eval.scores import record_score
from lmstack.hub.load import ModelBundle, load_model
from lmstack.inputs import read_text


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
    tokens = torch.tensor(ids, device=bundle.device)
    window = min(window, bundle.config.max_position_embeddings)
    stride = min(stride, window)
    total_nll, counted, scored_until = 0.0, 0, 1
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, stride):
            end = min(start + window, len(ids))
            logits = bundle.model(tokens[start:end][None])[0, :-1]
            targets = tokens[start + 1 : end]
            nll = F.cross_entropy(logits.float(), targets, reduction="none")
            fresh = nll[scored_until - start - 1 :]  # only tokens no earlier window scored
            total_nll += fresh.sum().item()
            counted += fresh.numel()
            scored_until = end
            if end == len(ids):
                break
    return math.exp(total_nll / counted)


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
