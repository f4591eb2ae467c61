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

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lmstack.errors import LmstackError

Scorer = Callable[[str, str], float]  # (the prompt's last user message, the answer) -> score
Messages = list[dict[str, str]]

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
        import lmstack

        return judge_scorer(lmstack.load(target))
    raise LmstackError(f"unknown scorer '{spec}'; use regex:PATTERN, python:module:function or judge:MODEL")


def judge_scorer(judge: Any) -> Scorer:
    """A scorer that asks a model for a 1-10 rating (greedy); an unreadable reply scores 0."""
    from lmstack.generate.text import chat_text

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


def sample_answers(loaded: Any, messages: Messages, n: int, *, temperature: float, top_p: float,
                   max_new_tokens: int, seed: int) -> list[str]:
    """`n` sampled answers to one conversation, generated together as one batch."""
    from lmstack.generate.generate import generate_ids
    from lmstack.generate.processors import SamplingConfig
    from lmstack.generate.text import stop_token_ids

    prompt = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    stops = stop_token_ids(loaded)
    rows = generate_ids(loaded.model, [list(prompt)] * n, sampling=SamplingConfig(temperature=temperature, top_p=top_p),
                        max_new_tokens=max_new_tokens, stop_token_ids=stops, seed=seed)
    return [loaded.tokenizer.decode([t for t in row if t not in stops], skip_special_tokens=True).strip()
            for row in rows]


@dataclass
class RejectionReport:
    output: Path
    prompts: int
    pairs: int  # prompts kept (their best and worst answers differ in score)


def rejection_sample(model: str, prompts: str, out: str | Path, *, scorer: str | Scorer, num_samples: int = 4,
                     temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 256, seed: int = 0,
                     loaded: Any = None) -> RejectionReport:
    """Write `{prompt, chosen, rejected, chosen_score, rejected_score}` JSONL from the model's own answers."""
    from rich.progress import track

    import lmstack
    from lmstack import registry
    from lmstack.data import read_records, write_jsonl

    if num_samples < 2:
        raise LmstackError(f"num_samples must be at least 2 to make a pair, got {num_samples}")
    loaded = loaded or lmstack.load(model)
    score = make_scorer(scorer) if isinstance(scorer, str) else scorer
    records = read_records(prompts)
    pairs = []
    for index, record in enumerate(track(records, description="sampling and scoring")):
        messages = prompt_messages(record)
        answers = sample_answers(loaded, messages, num_samples, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, seed=seed + index)
        scored = sorted(((score(messages[-1]["content"], a), a) for a in answers), key=lambda pair: pair[0])
        (worst, rejected), (best, chosen) = scored[0], scored[-1]
        if best > worst:
            pairs.append({"prompt": messages, "chosen": chosen, "rejected": rejected,
                          "chosen_score": best, "rejected_score": worst})
    out = write_jsonl(out, pairs)
    registry.record("dataset", out, name=Path(out).stem, operation="rejection-sampling", source=prompts,
                    parents=[getattr(loaded, "registry_id", None)],
                    recipe={"scorer": scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "callable"),
                            "num_samples": num_samples, "temperature": temperature, "top_p": top_p,
                            "max_new_tokens": max_new_tokens, "seed": seed},
                    metadata={"prompts": len(records), "pairs": len(pairs)})
    return RejectionReport(Path(out), len(records), len(pairs))
