"""Token-level generation: greedy, sampling and beam search over a KV cache.

A batch of prompts is left-padded so every row's last prompt token sits in the same column; the
attention mask hides the padding and the model derives positions from the mask. The prompt runs
through the model once (prefill), then each step feeds one new token per row (decode).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch

from lmstack.errors import LmstackError
from lmstack.generate.processors import SamplingConfig, apply_processors

log = logging.getLogger(__name__)

# on_token(row, token_id) streams each new token; returning True ends that row (stop strings).
TokenCallback = Callable[[int, int], "bool | None"]
# on_step(scores [B, V] after processors, chosen [B]) lets a caller watch each decision.
StepCallback = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass
class Timings:
    """Filled in by `generate_ids`: prefill is the prompt pass, decode every step after it."""

    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


def generate_ids(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    *,
    sampling: SamplingConfig | None = None,
    max_new_tokens: int = 256,
    stop_token_ids: list[int] | tuple[int, ...] = (),
    seed: int | None = None,
    on_token: TokenCallback | None = None,
    on_step: StepCallback | None = None,
    timings: Timings | None = None,
) -> list[list[int]]:
    """The new tokens of each prompt; a row that stopped on a stop token ends with it.

    Greedy and sampled decoding run the prompts as one batch; a finished row keeps its place
    (its further tokens are computed and dropped) until every row is done. Beam search runs
    the prompts one after another, each with `num_beams` rows. `seed` makes sampling
    reproducible. The prompt plus max_new_tokens must fit the model's context window.
    """
    sampling = sampling or SamplingConfig()
    _check_prompts(prompt_ids)
    max_new_tokens = fit_context(max(map(len, prompt_ids)), max_new_tokens, model.config.max_position_embeddings)
    timings = timings or Timings()
    with torch.inference_mode():
        if sampling.num_beams > 1:
            if on_step is not None:
                raise LmstackError("explain shows greedy or sampling steps, not beam search; set num_beams to 1 to use it")
            rows = [
                beam_search(model, prompt, sampling, max_new_tokens, stop_token_ids, timings) for prompt in prompt_ids
            ]
            return [_replay(row, tokens, on_token) for row, tokens in enumerate(rows)]
        return _sample(model, prompt_ids, sampling, max_new_tokens, stop_token_ids, seed, on_token, on_step, timings)


def fit_context(prompt_length: int, max_new_tokens: int, context: int) -> int:
    """max_new_tokens, shortened when prompt + new tokens would overflow the context window."""
    if max_new_tokens < 1:
        raise LmstackError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_length >= context:
        raise LmstackError(
            f"the prompt is {prompt_length} tokens but the model's context window is {context}; "
            "shorten the prompt"
        )
    room = context - prompt_length
    if max_new_tokens > room:
        log.warning(
            "note: max_new_tokens lowered from %d to %d to fit the %d-token context window",
            max_new_tokens, room, context,
        )
    return min(max_new_tokens, room)


def _check_prompts(prompt_ids: list[list[int]]) -> None:
    if not prompt_ids:
        raise LmstackError("no prompts given; pass at least one prompt")
    if any(len(p) == 0 for p in prompt_ids):
        raise LmstackError("a prompt has no tokens; give each prompt some text (or a BOS token)")


def left_pad(prompt_ids: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B, P], attention mask [B, P]) with every prompt aligned to the right.

    Padding repeats each row's first token: the mask hides it from the model, and it adds no new
    token to what the repetition penalty has seen.
    """
    width = max(map(len, prompt_ids))
    tokens = [[p[0]] * (width - len(p)) + p for p in prompt_ids]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids]
    return torch.tensor(tokens, device=device), torch.tensor(mask, device=device)


def pick_next(scores: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> torch.Tensor:
    """The next token per row: the argmax, or a draw from softmax(scores)."""
    if greedy:
        return scores.argmax(dim=-1)
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def _sample(model, prompt_ids, sampling, max_new_tokens, stop_token_ids, seed, on_token, on_step, timings):
    """Greedy or sampled decoding of a batch, one token per row per step."""
    device = model.device
    tokens, mask = left_pad(prompt_ids, device)
    if bool(mask.all()):
        mask = None  # no padding: plain causal attention, the faster path
    processors = sampling.processors()
    generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
    stop = torch.tensor(list(stop_token_ids), dtype=torch.long, device=device)
    cache = model.new_cache(len(prompt_ids), tokens.shape[1] + max_new_tokens)
    new_tokens: list[list[int]] = [[] for _ in prompt_ids]
    running = torch.ones(len(prompt_ids), dtype=torch.bool, device=device)

    start = time.perf_counter()
    logits = model(tokens, attention_mask=mask, cache=cache, last_only=True)[:, -1]
    for step in range(max_new_tokens):
        scores = apply_processors(processors, tokens, logits)
        chosen = pick_next(scores, sampling.greedy, generator)
        if on_step is not None:
            on_step(scores, chosen)
        running &= ~_record(chosen, running, stop, new_tokens, on_token)  # waits for the GPU
        if step == 0:
            timings.prefill_seconds = time.perf_counter() - start
            start = time.perf_counter()
        if not running.any() or step == max_new_tokens - 1:
            break
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(len(prompt_ids), 1)], dim=1)
        logits = model(chosen[:, None], attention_mask=mask, cache=cache, last_only=True)[:, -1]
    timings.decode_seconds = time.perf_counter() - start
    return new_tokens


def _record(chosen, running, stop, new_tokens, on_token) -> torch.Tensor:
    """Append the chosen tokens of running rows; return which rows finish now."""
    finishes = torch.isin(chosen, stop) & running
    for row in running.nonzero().flatten().tolist():
        token = int(chosen[row])
        new_tokens[row].append(token)
        if on_token is not None and on_token(row, token):
            finishes[row] = True
    return finishes


def _replay(row: int, tokens: list[int], on_token: TokenCallback | None) -> list[int]:
    """Stream a finished beam-search result; a callback asking to stop cuts it there."""
    if on_token is None:
        return tokens
    for i, token in enumerate(tokens):
        if on_token(row, token):
            return tokens[: i + 1]
    return tokens


# --- beam search ---------------------------------------------------------------------------------


def beam_search(
    model: torch.nn.Module,
    prompt: list[int],
    sampling: SamplingConfig,
    max_new_tokens: int,
    stop_token_ids: list[int] | tuple[int, ...],
    timings: Timings,
) -> list[int]:
    """The best-scoring continuation of one prompt, keeping `num_beams` hypotheses alive.

    Scores are summed log-probabilities; a finished hypothesis is ranked by
    score / length ** length_penalty (length counts the new tokens, stop token included), so a
    penalty above 0 favours longer answers. This follows transformers' beam search step by step.
    """
    n, device = sampling.num_beams, model.device
    processors = sampling.processors()
    stop = torch.tensor(list(stop_token_ids), dtype=torch.long, device=device)
    # Look at enough candidates that `n` remain even if every stop token tops every beam.
    candidates_per_step = max(2, 1 + len(stop_token_ids)) * n

    start = time.perf_counter()
    cache = model.new_cache(1, len(prompt) + max_new_tokens)
    logits = model(torch.tensor([prompt], device=device), cache=cache, last_only=True)[:, -1]
    cache.reorder(torch.zeros(n, dtype=torch.long, device=device))  # n copies of the prompt
    logits = logits.expand(n, -1)
    timings.prefill_seconds += time.perf_counter() - start
    start = time.perf_counter()

    beams = torch.tensor([prompt] * n, device=device)
    # Only the first copy may expand at step 0, or the n beams would all pick the same tokens.
    beam_scores = torch.full((n,), -1e9, device=device)
    beam_scores[0] = 0.0
    finished = _Finished(n, sampling.length_penalty)
    for step in range(max_new_tokens):
        length = step + 1
        log_probs = apply_processors(processors, beams, logits.log_softmax(dim=-1))
        totals = (log_probs + beam_scores[:, None]).flatten()
        top_scores, top_index = totals.topk(candidates_per_step)
        source_beam, token = top_index // logits.shape[-1], top_index % logits.shape[-1]
        ends = torch.isin(token, stop) | (length == max_new_tokens)
        for i in range(n):  # only the n best candidates may finish
            if ends[i]:
                finished.add(float(top_scores[i]), beams[source_beam[i], len(prompt):].tolist() + [int(token[i])], length)

        keep = (top_scores - ends.float() * 1e9).topk(n).indices  # best n that go on
        beams = torch.cat([beams[source_beam[keep]], token[keep, None]], dim=1)
        beam_scores = top_scores[keep] - ends[keep].float() * 1e9
        if length == max_new_tokens or finished.done(
            float(beam_scores[0]), length, max_new_tokens, sampling.early_stopping
        ):
            break
        cache.reorder(source_beam[keep])
        logits = model(token[keep, None], cache=cache, last_only=True)[:, -1]
    timings.decode_seconds += time.perf_counter() - start
    return finished.best()


class _Finished:
    """The n best finished hypotheses, each ranked by its length-penalised score."""

    def __init__(self, n: int, length_penalty: float):
        self.n, self.length_penalty = n, length_penalty
        self.hypotheses: list[tuple[float, list[int]]] = []

    def add(self, score: float, tokens: list[int], length: int) -> None:
        self.hypotheses.append((score / length**self.length_penalty, tokens))
        self.hypotheses.sort(key=lambda h: h[0], reverse=True)
        del self.hypotheses[self.n :]

    def best(self) -> list[int]:
        return self.hypotheses[0][1]

    def done(self, best_running: float, length: int, max_new_tokens: int, early_stopping: bool | str) -> bool:
        """Whether no running beam can still beat the finished ones."""
        if len(self.hypotheses) < self.n:
            return False
        if early_stopping is True:
            return True
        # The running beams can only lose log-probability; with early_stopping "never" and a
        # positive penalty, assume they could still grow to full length.
        hoped_length = max_new_tokens if early_stopping == "never" and self.length_penalty > 0 else length
        return best_running / hoped_length**self.length_penalty <= self.hypotheses[-1][0]
