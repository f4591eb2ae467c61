"""Text in, text out: prompts through the chat template, tokens back to streamed text.

`generate_text` and `chat_text` wrap `generate_ids` with what a user sees: the chat template,
stop tokens from the tokenizer and the model's generation config, stop strings, streaming,
timings, and `explain`, which records the candidates the model weighed at every step.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from lmstack.errors import LmstackError
from lmstack.generate.generate import Timings, generate_ids
from lmstack.generate.processors import SamplingConfig
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
    prefill_seconds: float  # timings are for the whole batch when several prompts run together
    decode_seconds: float
    steps: list[ExplainStep] | None = None  # filled with explain=True

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
    **sampling: Any,
) -> GenerationResult | list[GenerationResult]:
    """Continue one prompt (-> a result) or a list of prompts (-> a list, run as one batch).

    The prompt goes through the chat template (`template`: a built-in name or Jinja source, else
    the model's own) as a user message (after `system`, if given) unless `raw` is set or there is
    no template. `sampling` takes SamplingConfig's
    keys (temperature, top_k, top_p, min_p, repetition_penalty, num_beams, ...); unset keys come
    from the model's generation config, then SamplingConfig's greedy defaults.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    prompt_ids = [encode_prompt(loaded.tokenizer, p, system=system, raw=raw, template=template) for p in prompts]
    results = _generate(
        loaded, prompt_ids, stream=stream, explain=explain, explain_top_k=explain_top_k,
        max_new_tokens=max_new_tokens, stop=stop, seed=seed, **sampling,
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
    **sampling: Any,
) -> list[GenerationResult]:
    config = resolve_sampling(loaded.generation_config, sampling)
    stop_strings = [stop] if isinstance(stop, str) else list(stop or [])
    if stream and len(prompt_ids) > 1:
        raise LmstackError("streaming works with one prompt at a time; pass a single prompt or stream=False")
    emit = _stdout_writer if stream is True else stream or None
    stop_ids = stop_token_ids(loaded)
    rows = [_TextStream(loaded.tokenizer, stop_ids, stop_strings, emit) for _ in prompt_ids]
    explainer = _Explainer(loaded.tokenizer, rows, explain_top_k) if explain else None
    timings = Timings()
    token_ids = generate_ids(
        loaded.model, prompt_ids, sampling=config, max_new_tokens=max_new_tokens, stop_token_ids=stop_ids,
        seed=seed, on_token=lambda row, token: rows[row].push(token), on_step=explainer, timings=timings,
    )
    results = []
    for row, (prompt, tokens) in enumerate(zip(prompt_ids, token_ids)):
        rows[row].finish()
        results.append(
            GenerationResult(
                text=rows[row].text, token_ids=tokens, finish_reason="stop" if rows[row].stopped else "length",
                prompt_tokens=len(prompt), new_tokens=len(tokens), prefill_seconds=timings.prefill_seconds,
                decode_seconds=timings.decode_seconds, steps=explainer.steps[row] if explainer else None,
            )
        )
    return results


def _stdout_writer(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class _TextStream:
    """One row's reply as it grows: detokenized, cut at a stop string, streamed as it is safe."""

    def __init__(self, tokenizer: Any, stop_ids: list[int], stop_strings: list[str], emit: TextCallback | None):
        from lmstack.tokenizer import IncrementalDecoder

        self.decoder = IncrementalDecoder(tokenizer, skip_special_tokens=True)
        self.stop_ids, self.stop_strings, self.emit = set(stop_ids), [s for s in stop_strings if s], emit
        self.text = ""
        self.emitted = 0  # characters of `text` already streamed
        self.stopped = False

    def push(self, token_id: int) -> bool:
        """Take one new token; True when a stop string just ended the reply."""
        if token_id in self.stop_ids:  # generation ends on it; its text is not part of the reply
            self.stopped = True
            return False
        self._extend(self.decoder.push(token_id))
        return self.stopped

    def finish(self) -> None:
        if not self.stopped:
            self._extend(self.decoder.flush())
        self._emit_until(len(self.text))

    def _extend(self, piece: str) -> None:
        self.text += piece
        cut = _first_stop_string(self.text, self.stop_strings)
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            self._emit_until(cut)
        else:  # hold back a tail that may grow into a stop string
            self._emit_until(len(self.text) - _partial_stop_length(self.text, self.stop_strings))

    def _emit_until(self, end: int) -> None:
        if self.emit is not None and end > self.emitted:
            self.emit(self.text[self.emitted : end])
        self.emitted = max(self.emitted, end)


def _first_stop_string(text: str, stop_strings: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(found) if found else None


def _partial_stop_length(text: str, stop_strings: list[str]) -> int:
    """Length of the longest end of `text` that is the start of some stop string."""
    return max((n for s in stop_strings for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


class _Explainer:
    """Records, for each running row and step, the top candidates and the chosen token."""

    def __init__(self, tokenizer: Any, rows: list[_TextStream], top_k: int):
        if top_k < 1:
            raise LmstackError(f"explain_top_k must be >= 1, got {top_k}")
        self.tokenizer, self.rows, self.top_k = tokenizer, rows, top_k
        self.steps: list[list[ExplainStep]] = [[] for _ in rows]

    def __call__(self, scores: torch.Tensor, chosen: torch.Tensor) -> None:
        probs = scores.float().softmax(dim=-1)
        top = probs.topk(min(self.top_k, probs.shape[-1]), dim=-1)
        for row, stream in enumerate(self.rows):
            if stream.stopped:
                continue
            candidates = [self._candidate(int(t), float(p)) for t, p in zip(top.indices[row], top.values[row])]
            token = int(chosen[row])
            self.steps[row].append(ExplainStep(self._candidate(token, float(probs[row, token])), candidates))

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
