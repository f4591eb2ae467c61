"""Rejection sampling: make preference pairs from the model's own answers.

For each prompt the current model samples N answers; a scorer rates each one; the best becomes
`chosen` and the worst `rejected` (prompts whose answers all score the same teach nothing and are
skipped). The pairs are written as `{prompt, chosen, rejected}` JSONL, ready for `lmstack train dpo`.

A scorer is named by a string:
    regex:PATTERN          1 when the answer matches PATTERN (re.search), else 0
    python:module:function a function(prompt: str, answer: str) -> float
    judge:MODEL            a model (any reference `lmstack.load` takes) rates the answer from 1 to 10
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.progress import track

from lmstack import registry
from lmstack.data import dataset_reference, read_records, write_jsonl
from lmstack.errors import LmstackError
from lmstack.generate.generate import generate_ids
from lmstack.generate.processors import SamplingConfig
from lmstack.generate.text import chat_text, resolve_sampling, stop_token_ids
from lmstack.home import check_output
from lmstack.hub.load import ModelBundle, load_model
from lmstack.tokenizer.chat_template import Messages

Scorer = Callable[[str, str], float]  # (the prompt's last user message, the answer) -> score
# Rejection sampling needs varied answers: when the model's generation config decodes greedily,
# sampling uses this temperature instead.
FALLBACK_TEMPERATURE = 0.8

JUDGE_PROMPT = (
    "Rate how well the answer responds to the question, from 1 (useless or wrong) to 10 (correct, helpful "
    "and clear). Reply with the number only.\n\nQuestion:\n{prompt}\n\nAnswer:\n{answer}"
)


def make_scorer(spec: str) -> Scorer:
    """The scorer a `regex:`, `python:` or `judge:` string names."""
    kind, _, target = spec.partition(":")
    if kind == "regex" and target:
        try:
            pattern = re.compile(target)
        except re.error as err:
            raise LmstackError(f"invalid scorer regex {target!r} ({err}); fix the pattern") from None
        return lambda prompt, answer: float(pattern.search(answer) is not None)
    if kind == "python" and ":" in target:
        module_name, _, function_name = target.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as err:
            raise LmstackError(f"cannot import scorer {target} ({err}); give module:function on the Python path") from None
        return lambda prompt, answer: float(function(prompt, answer))
    if kind == "judge" and target:
        return judge_scorer(load_model(target))
    raise LmstackError(f"unknown scorer '{spec}'; use regex:PATTERN, python:module:function or judge:MODEL")


def judge_scorer(judge: Any) -> Scorer:
    """A scorer that asks a model for a 1-10 rating (greedy); an unreadable reply scores 0."""
    def score(prompt: str, answer: str) -> float:
        reply = chat_text(judge, [{"role": "user", "content": JUDGE_PROMPT.format(prompt=prompt, answer=answer)}],
                          max_new_tokens=8, temperature=0.0).text
        number = re.search(r"\d+(\.\d+)?", reply)
        return min(float(number.group()), 10.0) if number else 0.0

    return score


def prompt_messages(record: dict[str, Any]) -> Messages:
    """The conversation to answer: `prompt` (text or messages), or `messages` minus a final answer."""
    if isinstance(record.get("prompt"), str):
        return [{"role": "user", "content": record["prompt"]}]
    messages = record.get("prompt") or record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise LmstackError("each prompt record needs 'prompt' (text or messages) or 'messages'")
    return messages[:-1] if messages[-1]["role"] == "assistant" else messages


def sampling_for(bundle: ModelBundle, **overrides: Any) -> SamplingConfig:
    """The model's generation config with the caller's settings on top; never greedy."""
    settings = resolve_sampling(bundle.generation_config, overrides)
    return settings.updated(temperature=FALLBACK_TEMPERATURE) if settings.greedy else settings


def sample_answers(bundle: ModelBundle, messages: Messages, n: int, *, sampling: SamplingConfig,
                   max_new_tokens: int, seed: int) -> list[str]:
    """`n` sampled answers to one conversation, generated together as one batch."""
    prompt = bundle.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    stops = stop_token_ids(bundle)
    rows = generate_ids(bundle.model, [list(prompt)] * n, sampling=sampling,
                        max_new_tokens=max_new_tokens, stop_token_ids=stops, seed=seed)
    return [bundle.tokenizer.decode([t for t in row if t not in stops], skip_special_tokens=True).strip()
            for row in rows]


@dataclass
class RejectionReport:
    output: Path
    prompts: int
    pairs: int  # prompts kept (their best and worst answers differ in score)


def rejection_sample(model: str, prompts: str, out: str | Path, *, scorer: str | Scorer, num_samples: int = 4,
                     temperature: float | None = None, top_p: float | None = None, max_new_tokens: int = 256,
                     seed: int = 0, overwrite: bool = False, bundle: ModelBundle | None = None) -> RejectionReport:
    """Write `{prompt, chosen, rejected, chosen_score, rejected_score}` JSONL from the model's own answers.

    Unset `temperature`/`top_p` come from the model's generation config (sampling at
    FALLBACK_TEMPERATURE when it decodes greedily).
    """
    if num_samples < 2:
        raise LmstackError(f"num_samples must be at least 2 to make a pair, got {num_samples}")
    if max_new_tokens < 1:
        raise LmstackError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    out = check_output(out, overwrite=overwrite, directory=False)
    records = read_records(prompts)  # checked before the model loads
    score = make_scorer(scorer) if isinstance(scorer, str) else scorer
    bundle = bundle or load_model(model)
    sampling = sampling_for(bundle, temperature=temperature, top_p=top_p)
    pairs = []
    for index, record in enumerate(track(records, description="sampling and scoring")):
        messages = prompt_messages(record)
        answers = sample_answers(bundle, messages, num_samples, sampling=sampling, max_new_tokens=max_new_tokens,
                                 seed=seed + index)
        scored = sorted(((score(messages[-1]["content"], a), a) for a in answers), key=lambda pair: pair[0])
        (worst, rejected), (best, chosen) = scored[0], scored[-1]
        if best > worst:
            pairs.append({"prompt": messages, "chosen": chosen, "rejected": rejected,
                          "chosen_score": best, "rejected_score": worst})
    write_jsonl(out, pairs)
    registry.record("dataset", out, name=out.stem, operation="rejection-sampling", source=prompts,
                    parents=[bundle.lineage_id()], datasets=[dataset_reference(prompts)],
                    recipe={"scorer": scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "callable"),
                            "num_samples": num_samples, "sampling": dataclasses.asdict(sampling),
                            "max_new_tokens": max_new_tokens, "seed": seed},
                    metadata={"prompts": len(records), "pairs": len(pairs)})
    return RejectionReport(out, len(records), len(pairs))
