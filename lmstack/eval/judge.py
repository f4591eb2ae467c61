"""LLM-as-a-judge, as MT-Bench does it: a judge model grades one answer on a 1-10 rubric, or
compares two answers to the same question.

Pairwise judging runs every comparison twice with the answers swapped, because judges favour
whichever answer comes first: a win counts only when both orders pick the same answer; any
disagreement is a tie. A judgment that cannot be parsed (no `[[7]]` / `[[A]]` in it) is counted
as a parse failure and reported, never dropped or guessed.

The judge is any model lmstack loads, or any OpenAI-compatible endpoint (`--judge-url`,
`--judge-model`, the key from `$OPENAI_API_KEY` or the variable `--judge-key-env` names).
Pairwise results are written as battles (`{"model_a", "model_b", "winner"}`, FastChat's format)
for `lmstack eval arena`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmstack.data import content_hash, dataset_reference, read_records
from lmstack.errors import LmstackError
from lmstack.eval.scores import record_score
from lmstack.home import atomic_write_text, check_output
from lmstack.hub.llm import EndpointLLM, LocalLLM
from lmstack.hub.load import ModelBundle, load_model

SINGLE_SYSTEM = (
    "You are a strict, fair judge of an AI assistant's answer. Judge helpfulness, correctness, relevance "
    "and clarity; do not reward length. Explain briefly, then give your rating from 1 to 10 in exactly "
    "this form: Rating: [[7]]"
)
PAIR_SYSTEM = (
    "You are a strict, fair judge comparing two AI assistants' answers to the same question. Judge "
    "helpfulness, correctness, relevance and clarity; the order of the answers and their length must not "
    "sway you. Explain briefly, then give your verdict in exactly this form: [[A]] if assistant A is "
    "better, [[B]] if assistant B is better, [[C]] for a tie."
)
RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
CONSISTENT = {("A", "B"), ("B", "A"), ("C", "C")}  # the same preference read in both orders

Judge = Callable[[list[dict[str, str]]], str]  # messages -> the judge's reply


@dataclass
class Question:
    id: str
    text: str
    reference: str | None = None


@dataclass
class JudgeReport:
    mode: str  # "single" or "pairwise"
    judge: str
    models: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def read_questions(path: str) -> list[Question]:
    """`{question | turns, reference?, id | question_id?}` records (MT-Bench's layout works as is)."""
    records = read_records(path)
    if not records:
        raise LmstackError(f"{path} has no questions")
    questions = []
    for i, record in enumerate(records, 1):
        text = record.get("question") or (record.get("turns") or [None])[0]
        if not isinstance(text, str) or not text.strip():
            raise LmstackError(f"{path}: record {i} needs a non-empty 'question' (or 'turns') string")
        reference = record.get("reference")
        reference = reference[0] if isinstance(reference, list) and reference else reference
        questions.append(Question(str(record.get("id", record.get("question_id", i))), text,
                                  reference if isinstance(reference, str) else None))
    return questions


# --- judges ----------------------------------------------------------------------------------------


def local_judge(bundle: ModelBundle, max_new_tokens: int = 256) -> Judge:
    """A model lmstack loads, judging greedily through its chat template."""
    judge = LocalLLM(bundle.name, bundle=bundle)
    return lambda messages: judge.chat(messages, max_new_tokens=max_new_tokens)


def endpoint_judge(url: str, model: str, *, key_env: str = "OPENAI_API_KEY", max_tokens: int = 512,
                   timeout: float = 120.0) -> Judge:
    """An OpenAI-compatible chat-completions endpoint (temperature 0)."""
    judge = EndpointLLM(url, model, api_key=os.environ.get(key_env), timeout=timeout)
    return lambda messages: judge.chat(messages, max_new_tokens=max_tokens)


# --- prompts and parsing ---------------------------------------------------------------------------


def single_messages(question: Question, answer: str) -> list[dict[str, str]]:
    reference = f"[Reference answer]\n{question.reference}\n\n" if question.reference else ""
    return [{"role": "system", "content": SINGLE_SYSTEM},
            {"role": "user", "content": f"[Question]\n{question.text}\n\n{reference}[Assistant's answer]\n{answer}"}]


def pair_messages(question: Question, first: str, second: str) -> list[dict[str, str]]:
    reference = f"[Reference answer]\n{question.reference}\n\n" if question.reference else ""
    return [{"role": "system", "content": PAIR_SYSTEM},
            {"role": "user", "content": f"[Question]\n{question.text}\n\n{reference}[Assistant A's answer]\n{first}"
                                        f"\n\n[Assistant B's answer]\n{second}"}]


def parse_rating(judgment: str) -> float | None:
    """The last `[[n]]` rating in 1..10, or None (a parse failure)."""
    found = RATING.findall(judgment)
    if not found:
        return None
    rating = float(found[-1])
    return rating if 1 <= rating <= 10 else None


def parse_verdict(judgment: str) -> str | None:
    """'A', 'B' or 'C' (tie) from the last `[[X]]`, or None (a parse failure)."""
    found = VERDICT.findall(judgment)
    return found[-1] if found else None


def combine(first_order: str | None, swapped: str | None) -> str:
    """The winner of a comparison judged in both orders: 'model_a', 'model_b', 'tie' or 'error'.

    In the swapped run the letters are swapped too, so the same preference reads A then B.
    """
    if first_order is None or swapped is None:
        return "error"
    if first_order == "A" and swapped == "B":
        return "model_a"
    if first_order == "B" and swapped == "A":
        return "model_b"
    return "tie"


# --- the two modes ---------------------------------------------------------------------------------


def grade_answers(judge: Judge, questions: list[Question], answers: list[str], *,
                  on_row: Callable[[dict], None] | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Single-answer grading: a 1-10 rating per answer; the mean over the parsed ratings."""
    rows = []
    for question, answer in zip(questions, answers):
        judgment = judge(single_messages(question, answer))
        rows.append({"id": question.id, "question": question.text, "answer": answer, "judgment": judgment,
                     "rating": parse_rating(judgment)})
        if on_row:
            on_row(rows[-1])
    ratings = [r["rating"] for r in rows if r["rating"] is not None]
    summary = {"questions": len(rows), "rated": len(ratings), "parse_failures": len(rows) - len(ratings),
               "mean_rating": sum(ratings) / len(ratings) if ratings else None}
    return rows, summary


def compare_answers(judge: Judge, questions: list[Question], answers_a: list[str], answers_b: list[str], *,
                    on_row: Callable[[dict], None] | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Pairwise comparison with the position swap; wins, ties and parse failures of model A vs B."""
    rows = []
    for question, a, b in zip(questions, answers_a, answers_b):
        first = judge(pair_messages(question, a, b))
        swapped = judge(pair_messages(question, b, a))
        verdicts = (parse_verdict(first), parse_verdict(swapped))
        rows.append({"id": question.id, "question": question.text, "answer_a": a, "answer_b": b,
                     "judgment_ab": first, "judgment_ba": swapped, "verdict_ab": verdicts[0],
                     "verdict_ba": verdicts[1], "winner": combine(*verdicts)})
        if on_row:
            on_row(rows[-1])
    counts = {outcome: sum(r["winner"] == outcome for r in rows) for outcome in ("model_a", "model_b", "tie", "error")}
    decided = len(rows) - counts["error"]
    summary = {"questions": len(rows), "wins_a": counts["model_a"], "wins_b": counts["model_b"], "ties": counts["tie"],
               "parse_failures": counts["error"],
               "inconsistent_orders": sum(r["winner"] != "error" and (r["verdict_ab"], r["verdict_ba"]) not in CONSISTENT
                                          for r in rows),
               "win_rate_a": (counts["model_a"] + counts["tie"] / 2) / decided if decided else None}
    return rows, summary


# --- the command -----------------------------------------------------------------------------------


def judge_models(questions_path: str, models: list[str], *, judge: str | None = None, judge_url: str | None = None,
                 judge_model: str | None = None, judge_key_env: str = "OPENAI_API_KEY", output: str | Path,
                 overwrite: bool = False, max_new_tokens: int = 256, device: str | None = None,
                 dtype: str | None = None) -> JudgeReport:
    """Answer the questions with one model (graded 1-10) or two (compared, both orders).

    The judge is `judge` (a model reference) or the endpoint `judge_url` serving `judge_model`.
    Everything is checked before a model loads; each judgment is appended to
    `OUTPUT/judgments.jsonl` as it is made, and the summary goes into the registry.
    """
    if len(models) not in (1, 2):
        raise LmstackError(f"give one model (single grading) or two (pairwise comparison), got {len(models)}")
    if (judge is None) == (judge_url is None):
        raise LmstackError("name one judge: --judge MODEL (a model lmstack loads) or --judge-url URL --judge-model NAME")
    if judge_url is not None and not judge_model:
        raise LmstackError("--judge-url needs --judge-model (the model name the endpoint serves)")
    if not 1 <= max_new_tokens <= 8192:
        raise LmstackError(f"max_new_tokens must be in 1..8192, got {max_new_tokens}")
    questions = read_questions(questions_path)
    folder = check_output(output, overwrite=overwrite, directory=True)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("judgments.jsonl", "summary.json", "battles.jsonl"):
        (folder / stale).unlink(missing_ok=True)
    bundles = [load_model(m, device=device, dtype=dtype) for m in models]
    answers = [_answers(bundle, questions, max_new_tokens) for bundle in bundles]
    if judge_url is not None:
        ask, judge_name = endpoint_judge(judge_url, judge_model, key_env=judge_key_env), f"{judge_model}@{judge_url}"
    else:
        judge_bundle = next((b for b, m in zip(bundles, models) if m == judge), None)  # a model judging itself
        judge_bundle = judge_bundle or load_model(judge, device=device, dtype=dtype)
        ask, judge_name = local_judge(judge_bundle), judge_bundle.name
    with open(folder / "judgments.jsonl", "a", encoding="utf-8") as log:
        def write(row: dict) -> None:
            log.write(json.dumps(row, ensure_ascii=False) + "\n")
            log.flush()

        if len(bundles) == 1:
            rows, summary = grade_answers(ask, questions, answers[0], on_row=write)
        else:
            rows, summary = compare_answers(ask, questions, answers[0], answers[1], on_row=write)
    report = JudgeReport("single" if len(bundles) == 1 else "pairwise", judge_name, [b.name for b in bundles],
                         rows, summary)
    atomic_write_text(folder / "summary.json", json.dumps({"mode": report.mode, "judge": judge_name,
                                                           "models": report.models, **summary}, indent=2))
    if report.mode == "pairwise":
        ids = [b.lineage_id() for b in bundles]
        battles = [{"question_id": r["id"], "model_a": report.models[0], "model_b": report.models[1],
                    "model_a_id": ids[0], "model_b_id": ids[1], "winner": r["winner"]} for r in rows]
        atomic_write_text(folder / "battles.jsonl", "".join(json.dumps(b) + "\n" for b in battles))
    _record(bundles, report, questions_path)
    return report


def _answers(bundle: ModelBundle, questions: list[Question], max_new_tokens: int) -> list[str]:
    from lmstack.generate.text import chat_text

    return [chat_text(bundle, [{"role": "user", "content": q.text}], max_new_tokens=max_new_tokens,
                      temperature=0.0).text for q in questions]


def _record(bundles: list[ModelBundle], report: JudgeReport, questions_path: str) -> None:
    settings = {"judge": report.judge, "mode": report.mode, "questions": report.summary["questions"],
                "parse_failures": report.summary["parse_failures"]}
    reference, sha = dataset_reference(questions_path), content_hash(questions_path)
    if report.mode == "single":
        if report.summary["mean_rating"] is not None:
            record_score(bundles[0], "judge/rating", report.summary["mean_rating"], reference, settings, sha256=sha)
        return
    win_rate = report.summary["win_rate_a"]
    if win_rate is None:
        return
    for bundle, other, rate in ((bundles[0], bundles[1], win_rate), (bundles[1], bundles[0], 1 - win_rate)):
        record_score(bundle, "judge/win_rate", rate, reference, {**settings, "opponent": other.lineage_id(),
                                                                  "opponent_name": other.name}, sha256=sha)
