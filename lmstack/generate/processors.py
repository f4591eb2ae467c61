"""Logits processors: how a decoding strategy reshapes the next-token distribution.

Each processor is a small callable `(seen [B, V] bool, logits [B, V]) -> logits [B, V]`, where
`seen` marks the tokens each sequence holds so far (prompt included). Filters
set the logits of the tokens they remove to -inf, so a softmax afterwards gives them probability
0. `SamplingConfig` validates the user's settings and builds the list, in the same order as
transformers: repetition penalty, then temperature, top-k, top-p, min-p.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lmstack.errors import LmstackError

LogitsProcessor = Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]

REMOVED = float("-inf")


class Temperature:
    """Divide the logits: below 1 sharpens the distribution, above 1 flattens it."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, seen: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    """Keep the k most likely tokens (and any tied with the k-th)."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, seen: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth_best = logits.topk(k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth_best, REMOVED)


class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose probabilities add up to p."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, seen: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        # Sorted from least to most likely, the tokens to drop are a prefix: those whose
        # cumulative probability stays within the (1 - p) tail.
        ascending, order = logits.sort(dim=-1)
        tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = tail_mass <= 1 - self.p
        drop_sorted[..., -1] = False  # the most likely token always survives
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, REMOVED)


class MinP:
    """Keep tokens at least `min_p` times as likely as the most likely one."""

    def __init__(self, min_p: float):
        self.min_p = min_p

    def __call__(self, seen: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        threshold = self.min_p * probs.amax(dim=-1, keepdim=True)
        return logits.masked_fill(probs < threshold, REMOVED)


class RepetitionPenalty:
    """CTRL's penalty on every token already in the sequence (prompt included), once per token.

    Dividing a positive logit and multiplying a negative one both make the token less likely.
    """

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, seen: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen, penalised, logits)


def apply_processors(
    processors: list[LogitsProcessor], seen: torch.Tensor | None, logits: torch.Tensor
) -> torch.Tensor:
    for processor in processors:
        logits = processor(seen, logits)
    return logits


def seen_tokens(input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, V] True for every token that occurs in each row of `input_ids` [B, t]."""
    seen = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.bool, device=input_ids.device)
    return seen.scatter_(1, input_ids, True)


@dataclass
class SamplingConfig:
    """How the next token is chosen. `temperature` 0 (or `do_sample=False`) means greedy."""

    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    do_sample: bool | None = None  # None: sample exactly when temperature > 0
    num_beams: int = 1  # > 1 runs beam search (deterministic)
    length_penalty: float = 1.0  # beam score = log-prob sum / length ** length_penalty
    early_stopping: bool | str = False  # beam search: True, False (heuristic) or "never"

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "length_penalty"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                   f"{name} must be a finite number, got {value!r}")
        _check(self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        _check(_is_int(self.top_k) and self.top_k >= 0, f"top_k must be an integer >= 0 (0 = off), got {self.top_k}")
        _check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        _check(0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}")
        _check(self.repetition_penalty > 0, f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        _check(_is_int(self.num_beams) and self.num_beams >= 1, f"num_beams must be an integer >= 1, got {self.num_beams}")
        _check(
            self.early_stopping in (True, False, "never"),
            f"early_stopping must be true, false or 'never', got {self.early_stopping!r}",
        )
        _check(
            not (self.do_sample and self.temperature == 0),
            "do_sample=True needs a temperature > 0; set temperature (e.g. 0.7) or do_sample=False",
        )
        _check(
            self.num_beams == 1 or self.greedy,
            f"num_beams={self.num_beams} runs beam search, which does not sample; set temperature 0 "
            "(or do_sample=False), or num_beams 1 to sample",
        )

    @property
    def greedy(self) -> bool:
        return not self.do_sample if self.do_sample is not None else self.temperature == 0

    def processors(self) -> list[LogitsProcessor]:
        """The processors this config applies, in application order."""
        chain: list[LogitsProcessor] = []
        if self.repetition_penalty != 1.0:
            chain.append(RepetitionPenalty(self.repetition_penalty))
        if self.greedy:  # filters and temperature cannot change the argmax
            return chain
        if self.temperature != 1.0:
            chain.append(Temperature(self.temperature))
        if self.top_k:
            chain.append(TopK(self.top_k))
        if self.top_p < 1.0:
            chain.append(TopP(self.top_p))
        if self.min_p > 0.0:
            chain.append(MinP(self.min_p))
        return chain

    def updated(self, **changes: Any) -> "SamplingConfig":
        """A copy with `changes` applied; unknown keys are an error that lists the valid ones."""
        unknown = sorted(set(changes) - set(SAMPLING_KEYS))
        _check(not unknown, f"unknown sampling setting(s) {', '.join(unknown)}; valid: {', '.join(SAMPLING_KEYS)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_generation_config(cls, generation_config: dict[str, Any] | None) -> "SamplingConfig":
        """The decoding a model's `generation_config.json` asks for (greedy when it says nothing).

        As in transformers, temperature and the filters only count when do_sample is true, and
        sampling then defaults to temperature 1.0 and top_k 50.
        """
        gc = generation_config or {}
        settings = {k: gc[k] for k in ("repetition_penalty", "num_beams", "length_penalty", "early_stopping") if k in gc}
        if gc.get("do_sample"):
            settings |= {"temperature": gc.get("temperature", 1.0), "top_k": gc.get("top_k", 50)}
            settings |= {k: gc[k] for k in ("top_p", "min_p") if gc.get(k) is not None}
        return cls(**{k: v for k, v in settings.items() if v is not None})


SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(SamplingConfig))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LmstackError(message)
