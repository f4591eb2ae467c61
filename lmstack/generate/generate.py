"""Token-level generation on the engine: greedy and sampled decoding of any batch, and beam search.

`generate_ids` submits one engine request per prompt and collects the tokens; the prompts run
with continuous batching, so a short answer leaves the batch as soon as it ends. `engine_for`
keeps one engine per model, so its prefix cache serves later calls too (a chat's next turn only
computes the new messages). Beam search runs on the same paged cache: the beams of a prompt
share its blocks and copy a block only when they write different tokens into it.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lmstack.errors import LmstackError
from lmstack.generate.engine import Engine, EngineConfig, Request
from lmstack.generate.multi_lora import AdapterLoader
from lmstack.generate.processors import SamplingConfig, apply_processors, seen_tokens

# on_token(row, token_id) streams each new token; returning True ends that row (stop strings).
TokenCallback = Callable[[int, int], "bool | None"]
# on_step(row, scores [V] after processors, chosen) lets a caller watch each decision.
StepCallback = Callable[[int, torch.Tensor, int], None]

_ENGINES: "weakref.WeakKeyDictionary[torch.nn.Module, Engine]" = weakref.WeakKeyDictionary()


@dataclass
class Timings:
    """Filled in by `generate_ids`: prefill is the prompt pass, decode every step after it."""

    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


def engine_for(model: torch.nn.Module, config: EngineConfig | None = None, *, tokenizer: Any = None,
               adapter_loader: AdapterLoader | None = None) -> Engine:
    """The engine that runs `model`, kept while the model lives; another config builds a new one."""
    engine = _ENGINES.get(model)
    stale = engine is not None and (
        (config is not None and config != engine.config) or (adapter_loader is not None and engine.lora is None)
    )
    if engine is None or stale:
        if engine is not None:
            engine.close()
        # The engine holds the model weakly, so caching it here does not keep the model alive.
        engine = Engine(weakref.proxy(model), tokenizer=tokenizer, config=config, adapter_loader=adapter_loader)
        _ENGINES[model] = engine
    if tokenizer is not None:
        engine.tokenizer = tokenizer
    return engine


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
    engine: Engine | None = None,
    **request: Any,
) -> list[list[int]]:
    """The new tokens of each prompt; a row that stopped on a stop token ends with it.

    Every prompt is one request to the engine (`engine`, else the model's own), run with
    continuous batching. `seed` makes sampling reproducible: prompt i draws from a generator
    seeded with seed + i. Beam search (num_beams > 1) runs the prompts one after another.
    `request` takes further `Request` fields: constraint, adapter, speculate.
    """
    sampling = sampling or SamplingConfig()
    if not prompt_ids:
        raise LmstackError("no prompts given; pass at least one prompt")
    engine = engine or engine_for(model)
    timings = timings or Timings()
    if sampling.num_beams > 1:
        if on_step is not None:
            raise LmstackError("explain shows greedy or sampling steps, not beam search; set num_beams to 1 to use it")
        rows = [beam_search(engine, prompt, sampling, max_new_tokens, stop_token_ids, timings) for prompt in prompt_ids]
        return [_replay(row, tokens, on_token) for row, tokens in enumerate(rows)]
    stream = on_token is not None or on_step is not None
    handles = []
    for row, prompt in enumerate(prompt_ids):
        observer = (lambda scores, chosen, row=row: on_step(row, scores, chosen)) if on_step else None
        handles.append(engine.submit(Request(
            list(prompt), sampling=sampling, max_new_tokens=max_new_tokens, stop_token_ids=tuple(stop_token_ids),
            seed=None if seed is None else seed + row, stream=stream, observer=observer, **request,
        )))
    if on_token is None:
        results = [list(h.result().token_ids) for h in handles]
    else:
        results = _stream_rows(engine, handles, on_token)
    _fill_timings(timings, handles)
    return results


def _stream_rows(engine: Engine, handles: list, on_token: TokenCallback) -> list[list[int]]:
    """Hand every token to `on_token` as it comes; a True answer ends that row there."""
    results: list[list[int]] = [[] for _ in handles]
    open_rows = set(range(len(handles)))
    while open_rows:
        engine.wait_or_step()
        for row in sorted(open_rows):
            for output in handles[row].poll():
                for token in output.token_ids:
                    results[row].append(token)
                    if on_token(row, token):
                        handles[row].cancel()
                        open_rows.discard(row)
                        break
                if output.finished:
                    open_rows.discard(row)
                if row not in open_rows:
                    break
    return results


def _fill_timings(timings: Timings, handles: list) -> None:
    """Prefill: until the last first token; decode: from the first first token to the last end."""
    first = [h.first_token_at for h in handles if h.first_token_at is not None]
    if first:
        start = min(h.submitted_at for h in handles)
        timings.prefill_seconds = max(first) - start
        timings.decode_seconds = max(h.finished_at or time.perf_counter() for h in handles) - min(first)


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
    engine: Engine,
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
    It holds the engine for its whole run (no other request steps meanwhile).
    """
    if not prompt:
        raise LmstackError("a prompt has no tokens; give each prompt some text (or a BOS token)")
    max_new_tokens = engine.limit(len(prompt), max_new_tokens)
    with engine.exclusive() as cache:
        return _beam_search(engine, cache, prompt, sampling, max_new_tokens, stop_token_ids, timings)


def _beam_search(engine, cache, prompt, sampling, max_new_tokens, stop_token_ids, timings) -> list[int]:
    n, device = sampling.num_beams, engine.device
    processors = sampling.processors()
    stop = torch.tensor(list(stop_token_ids), dtype=torch.long, device=device)
    # Look at enough candidates that `n` remain even if every stop token tops every beam.
    candidates_per_step = max(2, 1 + len(stop_token_ids)) * n
    vocab = engine.model.config.vocab_size

    start = time.perf_counter()
    blocks = cache.prefill(prompt)
    logits = cache.last_logits.expand(n, -1)
    tables = [cache.fork(blocks) for _ in range(n)]
    cache.release(blocks)
    timings.prefill_seconds += time.perf_counter() - start
    start = time.perf_counter()

    beams = torch.tensor([prompt] * n, device=device)
    # Only the first copy may expand at step 0, or the n beams would all pick the same tokens.
    beam_scores = torch.full((n,), -1e9, device=device)
    beam_scores[0] = 0.0
    finished = _Finished(n, sampling.length_penalty)
    try:
        for step in range(max_new_tokens):
            length = step + 1
            seen = seen_tokens(beams, vocab) if sampling.repetition_penalty != 1.0 else None
            log_probs = apply_processors(processors, seen, logits.log_softmax(dim=-1))
            totals = (log_probs + beam_scores[:, None]).flatten()
            top_scores, top_index = totals.topk(candidates_per_step)
            source_beam, token = top_index // logits.shape[-1], top_index % logits.shape[-1]
            ends = torch.isin(token, stop) | (length == max_new_tokens)
            for i in range(n):  # only the n best candidates may finish
                if ends[i]:
                    finished.add(float(top_scores[i]), beams[source_beam[i], len(prompt):].tolist() + [int(token[i])],
                                 length)

            keep = (top_scores - ends.float() * 1e9).topk(n).indices  # best n that go on
            beams = torch.cat([beams[source_beam[keep]], token[keep, None]], dim=1)
            beam_scores = top_scores[keep] - ends[keep].float() * 1e9
            if length == max_new_tokens or finished.done(
                float(beam_scores[0]), length, max_new_tokens, sampling.early_stopping
            ):
                break
            old, tables = tables, [cache.fork(tables[int(s)]) for s in source_beam[keep].tolist()]
            for table in old:
                cache.release(table)
            logits = cache.decode(tables, token[keep].tolist(), beams.shape[1] - 1)
    finally:
        for table in tables:
            cache.release(table)
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
