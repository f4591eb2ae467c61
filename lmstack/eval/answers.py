"""Answer-match rate: ask each question, check the answer contains the expected text."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AnswerReport:
    rate: float
    matched: int
    total: int
    rows: list[dict] = field(default_factory=list)  # question, expected, answer, matched


def answer_match_rate(loaded, records: list[dict], *, max_new_tokens: int = 48, batch_size: int = 8) -> AnswerReport:
    """Greedy answers to `records` ({messages, expected}); case-insensitive substring match."""
    from lmstack.errors import LmstackError
    from lmstack.generate.generate import generate_ids
    from lmstack.generate.text import stop_token_ids

    for i, record in enumerate(records, 1):
        if "messages" not in record or "expected" not in record:
            raise LmstackError(f"record {i} needs 'messages' and 'expected' fields, got {sorted(record)}")
    rows = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        prompts = [loaded.tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True)
                   for r in batch]
        answers = generate_ids(loaded.model, prompts, max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids(loaded))
        for record, answer_ids in zip(batch, answers):
            answer = loaded.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
            matched = record["expected"].lower() in answer.lower()
            rows.append({"question": record["messages"][-1]["content"], "expected": record["expected"],
                         "answer": answer, "matched": matched})
    matched = sum(r["matched"] for r in rows)
    return AnswerReport(rate=matched / max(len(rows), 1), matched=matched, total=len(rows), rows=rows)
