"""Text in, text out: prompts through the chat template, tokens back to streamed text.

`generate_text` and `chat_text` send requests to the engine with what a user sees around them:
the chat template, stop tokens from the tokenizer and the model's generation config, stop
strings, streaming, timings, structured output, adapters, speculative decoding, and `explain`,
which records the candidates the model weighed at every step.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from lmstack.errors import LmstackError
from lmstack.generate.detokenize import TextStream
from lmstack.generate.engine import Engine, EngineConfig, Request
from lmstack.generate.generate import Timings, engine_for, generate_ids
from lmstack.generate.processors import SamplingConfig
from lmstack.generate.speculative import SpeculativeConfig
from lmstack.generate.structured import Grammar
from lmstack.tokenizer.chat_template import Messages

TextCallback = Callable[[str], None]


@dataclass
class Candidate:
    token_id: int
    text: str
    probability: float  # after the logits processors, i.e. what the token was picked from


@dataclass
class ExplainStep:
    chosen: Candidate
    candidates: list[Candidate]  # the most likely tokens at this step, best first


@dataclass
class GenerationResult:
    text: str  # the reply, without the stop token or stop string
    token_ids: list[int]  # every new token, the stop token included
    finish_reason: str  # "stop" (stop token or string) or "length" (max_new_tokens reached)
    prompt_tokens: int
    new_tokens: int
    prefill_seconds: float  # from submitting the request to its first token (time to first token)
    decode_seconds: float  # from the first token to the last
    steps: list[ExplainStep] | None = None  # filled with explain=True
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    speculative_proposed: int = 0  # draft tokens proposed by speculative decoding
    speculative_accepted: int = 0  # ... and kept

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        # The first new token comes out of the prefill; decode makes the rest.
        return (self.new_tokens - 1) / self.decode_seconds if self.decode_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "prefill_tokens_per_second": self.prefill_tokens_per_second,
            "decode_tokens_per_second": self.decode_tokens_per_second,
        }


def generate_text(
    loaded: Any,
    prompt: str | list[str],
    *,
    system: str | None = None,
    raw: bool = False,
    template: str | None = None,
    stream: bool | TextCallback = False,
    explain: bool = False,
    explain_top_k: int = 5,
    max_new_tokens: int = 256,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    **options: Any,
) -> GenerationResult | list[GenerationResult]:
    """Continue one prompt (-> a result) or a list of prompts (-> a list, run as one batch).

    The prompt goes through the chat template (`template`: a built-in name or Jinja source, else
    the model's own) as a user message (after `system`, if given) unless `raw` is set or there is
    no template. `sampling` takes SamplingConfig's
    keys (temperature, top_k, top_p, min_p, repetition_penalty, num_beams, ...); unset keys come
    from the model's generation config, then SamplingConfig's greedy defaults. More keywords:
    grammar (a `Grammar`: JSON schema, regex, choices, Lark or GBNF), adapter (a PEFT adapter
    directory or registry id, served on the shared base model), speculative ("ngram" or a
    `SpeculativeConfig`), engine (an `Engine` to run on, or an `EngineConfig` for the model's).
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    prompt_ids = [encode_prompt(loaded.tokenizer, p, system=system, raw=raw, template=template) for p in prompts]
    results = _generate(
        loaded, prompt_ids, stream=stream, explain=explain, explain_top_k=explain_top_k,
        max_new_tokens=max_new_tokens, stop=stop, seed=seed, **options,
    )
    return results[0] if isinstance(prompt, str) else results


def chat_text(
    loaded: Any, messages: Messages, *, system: str | None = None, template: str | None = None, **kwargs: Any
) -> GenerationResult:
    """The assistant's next reply to a conversation in OpenAI `messages` form.

    Takes generate_text's keywords except `raw`; `system` is used when the messages have none.
    """
    if system is not None and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    prompt_ids = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                      chat_template=template)
    return _generate(loaded, [prompt_ids], **kwargs)[0]


def encode_prompt(tokenizer: Any, prompt: str, *, system: str | None = None, raw: bool = False,
                  template: str | None = None) -> list[int]:
    """Token ids for a user prompt: chat-formatted, or plain text with the model's BOS."""
    if raw or (template is None and tokenizer.chat_template is None):
        if system is not None:
            raise LmstackError("a system prompt needs the chat template; drop --raw or put the system text in the prompt")
        return tokenizer.encode(prompt)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, chat_template=template)


def resolve_sampling(generation_config: dict[str, Any] | None, overrides: dict[str, Any]) -> SamplingConfig:
    """Defaults, then the model's generation config, then the caller's settings (None = unset)."""
    defaults = SamplingConfig.from_generation_config(generation_config)
    return defaults.updated(**{key: value for key, value in overrides.items() if value is not None})


def stop_token_ids(loaded: Any) -> list[int]:
    """The tokenizer's EOS and end-of-turn tokens, plus any EOS the generation config names."""
    eos = (loaded.generation_config or {}).get("eos_token_id")
    extra = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return list(dict.fromkeys([*loaded.tokenizer.stop_token_ids, *extra]))


def _generate(
    loaded: Any,
    prompt_ids: list[list[int]],
    *,
    stream: bool | TextCallback = False,
    explain: bool = False,
    explain_top_k: int = 5,
    max_new_tokens: int = 256,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    grammar: Grammar | None = None,
    adapter: str | None = None,
    speculative: str | SpeculativeConfig | None = None,
    engine: Engine | EngineConfig | None = None,
    **sampling: Any,
) -> list[GenerationResult]:
    config = resolve_sampling(loaded.generation_config, sampling)
    stop_strings = [stop] if isinstance(stop, str) else list(stop or [])
    if stream and len(prompt_ids) > 1:
        raise LmstackError("streaming works with one prompt at a time; pass a single prompt or stream=False")
    emit = _stdout_writer if stream is True else stream or None
    stop_ids = stop_token_ids(loaded)
    explainer = _Explainer(loaded.tokenizer, len(prompt_ids), explain_top_k) if explain else None
    engine = text_engine(loaded, engine, speculative, adapter)
    if config.num_beams > 1:
        if explain or grammar is not None:
            what = "explain shows greedy or sampling steps" if explain else "structured output samples token by token"
            raise LmstackError(f"{what}, not beam search; set num_beams to 1 to use it")
        return _beam_results(loaded, engine, prompt_ids, config, max_new_tokens, stop_ids, stop_strings, emit,
                             adapter)
    handles = []
    for row, prompt in enumerate(prompt_ids):
        constraint = grammar.constraint(loaded.tokenizer, loaded.config.vocab_size, stop_ids) if grammar else None
        observer = (lambda scores, chosen, row=row: explainer(row, scores, chosen)) if explainer else None
        handles.append(engine.submit(Request(
            list(prompt), sampling=config, max_new_tokens=max_new_tokens, stop_token_ids=tuple(stop_ids),
            stop=tuple(stop_strings), constraint=constraint, adapter=adapter_key(adapter),
            seed=None if seed is None else seed + row, speculate=speculative is not None or isinstance(engine, Engine),
            stream=emit is not None or explain, observer=observer,
        )))
    if emit is not None:
        for output in handles[0]:
            if output.text:
                emit(output.text)
    return [_result(h, explainer.steps[row] if explainer else None) for row, h in enumerate(handles)]


def text_engine(loaded: Any, engine: Engine | EngineConfig | None = None,
                speculative: str | SpeculativeConfig | None = None, adapter: str | None = None) -> Engine:
    """The engine for `loaded`: the one given, else the model's own (rebuilt for a new config)."""
    if isinstance(engine, Engine):
        return engine
    config = engine
    if speculative is not None:
        spec = SpeculativeConfig(method=speculative) if isinstance(speculative, str) else speculative
        config = replace(config or engine_for(loaded.model).config, speculative=spec)
    loader = getattr(loaded, "lora_factors", None) if adapter is not None else None
    if adapter is not None and loader is None:
        raise LmstackError("this model cannot load adapters by name; load it with lmstack.load to use adapter=")
    return engine_for(loaded.model, config, tokenizer=loaded.tokenizer, adapter_loader=loader)


def adapter_key(adapter: str | None) -> str | None:
    """An adapter reference as the engine names it: directories by their absolute path."""
    if adapter is None:
        return None
    path = Path(adapter)
    return str(path.resolve()) if path.is_dir() else adapter


def _result(handle: Any, steps: list[ExplainStep] | None) -> GenerationResult:
    handle.result()
    first = handle.first_token_at or handle.finished_at
    return GenerationResult(
        text=handle.stream.text if handle.stream is not None else "", token_ids=list(handle.token_ids),
        finish_reason=handle.finish_reason, prompt_tokens=handle.prompt_tokens, new_tokens=len(handle.token_ids),
        prefill_seconds=first - handle.submitted_at, decode_seconds=handle.finished_at - first, steps=steps,
        cached_tokens=handle.cached_tokens, speculative_proposed=handle.drafted,
        speculative_accepted=handle.accepted,
    )


def _beam_results(loaded, engine, prompt_ids, config, max_new_tokens, stop_ids, stop_strings, emit, adapter):
    if adapter is not None:
        raise LmstackError("beam search runs on the base model; drop the adapter or load the model with it")
    results = []
    for prompt in prompt_ids:
        timings = Timings()
        tokens = generate_ids(loaded.model, [prompt], sampling=config, max_new_tokens=max_new_tokens,
                              stop_token_ids=stop_ids, timings=timings, engine=engine)[0]
        text = TextStream(loaded.tokenizer, set(stop_ids), stop_strings)
        kept = []
        for token in tokens:
            kept.append(token)
            if text.push(token):
                break
        text.finish()
        if emit is not None:
            emit(text.text)
        stopped = text.stopped or (kept and kept[-1] in stop_ids)
        results.append(GenerationResult(
            text=text.text, token_ids=kept, finish_reason="stop" if stopped else "length", prompt_tokens=len(prompt),
            new_tokens=len(kept), prefill_seconds=timings.prefill_seconds, decode_seconds=timings.decode_seconds,
        ))
    return results


def _stdout_writer(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class _Explainer:
    """Records, for each row and step, the top candidates and the chosen token."""

    def __init__(self, tokenizer: Any, rows: int, top_k: int):
        if top_k < 1:
            raise LmstackError(f"explain_top_k must be >= 1, got {top_k}")
        self.tokenizer, self.top_k = tokenizer, top_k
        self.steps: list[list[ExplainStep]] = [[] for _ in range(rows)]

    def __call__(self, row: int, scores: torch.Tensor, chosen: int) -> None:
        probs = scores.float().softmax(dim=-1)
        top = probs.topk(min(self.top_k, probs.shape[-1]))
        candidates = [self._candidate(int(t), float(p)) for t, p in zip(top.indices, top.values)]
        self.steps[row].append(ExplainStep(self._candidate(chosen, float(probs[chosen])), candidates))

    def _candidate(self, token_id: int, probability: float) -> Candidate:
        return Candidate(token_id, self.tokenizer.decode([token_id]), probability)


def explanation_table(result: GenerationResult, title: str = "decoding, step by step"):
    """A rich Table of `result.steps`: each step's candidates and the token that was picked."""
    from rich.table import Table

    if not result.steps:
        raise LmstackError("this result has no explanation; generate with explain=True")
    table = Table(title=title, show_lines=False)
    table.add_column("step", justify="right")
    table.add_column("chosen")
    table.add_column("p", justify="right")
    table.add_column("top candidates (probabilities after the sampling settings)")
    for i, step in enumerate(result.steps, 1):
        others = "  ".join(
            f"[bold]{_show(c.text)}[/] {c.probability:.3f}" if c.token_id == step.chosen.token_id
            else f"{_show(c.text)} {c.probability:.3f}"
            for c in step.candidates
        )
        table.add_row(str(i), _show(step.chosen.text), f"{step.chosen.probability:.3f}", others)
    return table


def _show(token_text: str) -> str:
    """A token's text with its spaces and newlines visible, safe for rich markup."""
    from rich.markup import escape

    return escape(repr(token_text))
