"""Answer-match rate: ask each question, check the answer contains the expected text."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmstack.data import read_records
from lmstack.errors import LmstackError
from lmstack.eval.scores import record_score
from lmstack.generate.generate import generate_ids
from lmstack.generate.text import stop_token_ids
from lmstack.hub.load import ModelBundle, load_model


@dataclass
class AnswerReport:
    model: str
    rate: float
    matched: int
    total: int
    rows: list[dict] = field(default_factory=list)  # question, expected, answer, matched


def answer_match_rate(bundle: ModelBundle, records: list[dict[str, Any]], *, max_new_tokens: int = 48,
                      batch_size: int = 8) -> AnswerReport:
    """Greedy answers to `records` ({messages, expected}); case-insensitive substring match."""
    _check_records(records)
    rows = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        prompts = [bundle.tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True)
                   for r in batch]
        answers = generate_ids(bundle.model, prompts, max_new_tokens=max_new_tokens,
                               stop_token_ids=stop_token_ids(bundle))
        for record, answer_ids in zip(batch, answers):
            answer = bundle.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
            matched = record["expected"].lower() in answer.lower()
            rows.append({"question": record["messages"][-1]["content"], "expected": record["expected"],
                         "answer": answer, "matched": matched})
    matched = sum(r["matched"] for r in rows)
    return AnswerReport(model=bundle.name, rate=matched / len(rows), matched=matched, total=len(rows), rows=rows)


def _check_records(records: list[dict[str, Any]]) -> None:
    if not records:
        raise LmstackError("no questions to ask: the dataset is empty")
    for i, record in enumerate(records, 1):
        if not isinstance(record.get("messages"), list) or not isinstance(record.get("expected"), str):
            raise LmstackError(f"record {i} needs a 'messages' list and an 'expected' string, got {sorted(record)}")


def evaluate_answers(model: str, dataset: str, *, adapter: str | Path | None = None, device: str | None = None,
                     dtype: str | None = None, max_new_tokens: int = 48) -> AnswerReport:
    """Answer-match rate of `model` on a `{messages, expected}` dataset, recorded in the registry.

    The dataset is read and checked before the model loads.
    """
    if max_new_tokens < 1:
        raise LmstackError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    records = read_records(dataset)
    _check_records(records)
    bundle = load_model(model, device=device, dtype=dtype, adapter=adapter)
    report = answer_match_rate(bundle, records, max_new_tokens=max_new_tokens)
    record_score(bundle, "answer_match", report.rate, dataset,
                 {"max_new_tokens": max_new_tokens, "matched": report.matched, "total": report.total})
    return report
