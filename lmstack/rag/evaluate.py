"""`lmstack rag eval`: how good is retrieval, and how good are the answers built on it.

Retrieval, on labelled questions `{"question", "answer", "sources"}`: hit rate, MRR and nDCG at
k (`retrieval_metrics`). Answers, with a judge LLM, as Ragas defines them:

- context precision: each retrieved passage gets a verdict v_i (useful for the reference
  answer?); the score is sum_k(precision@k * v_k) / (number of useful passages), which rewards
  useful passages ranked early.
- context recall: the share of the reference answer's statements the retrieved passages support.
- faithfulness: the share of the generated answer's statements the passages support.
- answer relevancy: the mean cosine similarity between the question and questions the judge
  writes back from the answer (an evasive or off-topic answer yields unrelated questions).

Statements are the sentences of an answer (Ragas asks the LLM to split them; sentences are the
dependable version for small local judges). A verdict the judge does not give as Yes/No is a
parse failure: counted, and left out of the score rather than guessed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.rag.ask import ask
from lmstack.rag.embeddings import Embedder, embed
from lmstack.rag.index import index_path, open_for_query
from lmstack.hub.llm import LLM, load_llm
from lmstack.rag.retrieval_metrics import retrieval_scores
from lmstack.rag.search import search

def shipped_corpus() -> Path:
    """The small labelled corpus that ships with lmstack (a lab handbook in several formats)."""
    return Path(__file__).resolve().parents[1] / "datasets" / "rag_corpus"


def read_questions(reference: str) -> list[dict[str, Any]]:
    """Labelled questions from a JSONL file (or `lmstack:rag_questions`), each checked."""
    from lmstack.data.io import read_source

    source = read_source(reference)
    rows = []
    for row, where in zip(source.records, source.locations):
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise LmstackError(f"{source.path}, {where}: needs a \"question\" string (and \"answer\", \"sources\")")
        sources = row.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise LmstackError(f"{source.path}, {where}: \"sources\" must be a list of paths")
        rows.append({"question": row["question"], "answer": str(row.get("answer", "")), "sources": sources})
    if not rows:
        raise LmstackError(f"{source.path} has no questions")
    return rows


def statements(text: str) -> list[str]:
    """The sentences of a text (at least a few characters each)."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [part.strip() for part in parts if len(part.strip()) > 3]


def _verdicts(judge: LLM, prompts: list[str]) -> list[bool | None]:
    """Yes -> True, No -> False, anything else -> None (a parse failure)."""
    replies = judge.complete(prompts, system="Answer with Yes or No only.", max_new_tokens=3)
    verdicts = []
    for reply in replies:
        word = re.match(r"\W*(\w+)", reply.lower())
        verdicts.append({"yes": True, "no": False}.get(word.group(1)) if word else None)
    return verdicts


def context_precision(judge: LLM, question: str, reference: str, contexts: list[str]) -> tuple[float | None, int]:
    prompts = [f"Question: {question}\nReference answer: {reference}\nPassage: {context}\n"
               "Is the passage useful for arriving at the reference answer? Answer Yes or No." for context in contexts]
    verdicts = _verdicts(judge, prompts)
    failures = verdicts.count(None)
    flags = [bool(v) for v in verdicts]
    useful = sum(flags)
    if not contexts or failures == len(contexts):
        return None, failures
    if useful == 0:
        return 0.0, failures
    score = sum((sum(flags[: i + 1]) / (i + 1)) * flag for i, flag in enumerate(flags)) / useful
    return score, failures


def _supported_share(judge: LLM, claims: list[str], contexts: list[str]) -> tuple[float | None, int]:
    context = "\n\n".join(contexts)
    prompts = [f"Context:\n{context}\n\nStatement: {claim}\n"
               "Can the statement be inferred from the context? Answer Yes or No." for claim in claims]
    verdicts = _verdicts(judge, prompts)
    judged = [v for v in verdicts if v is not None]
    return (sum(judged) / len(judged) if judged else None), verdicts.count(None)


def context_recall(judge: LLM, reference: str, contexts: list[str]) -> tuple[float | None, int]:
    return _supported_share(judge, statements(reference), contexts)


def faithfulness(judge: LLM, answer: str, contexts: list[str]) -> tuple[float | None, int]:
    return _supported_share(judge, statements(answer), contexts)


def answer_relevancy(judge: LLM, embedder: Embedder, question: str, answer: str, n: int = 3) -> float:
    prompt = f"Write {n} questions, one per line, that this answer would answer.\nAnswer: {answer}"
    lines = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", line).strip()
             for line in judge.complete([prompt], max_new_tokens=30 * n)[0].splitlines()]
    generated = [line for line in lines if line][:n]
    if not generated:
        return 0.0
    vectors = embed(embedder, [question, *generated])
    return float(np.mean(vectors[1:] @ vectors[0]))


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def evaluate_rag(index: str, questions: str, *, model: str | None = None, judge: str | None = None, k: int = 5,
                 mode: str = "hybrid", limit: int | None = None, embedder: str | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """Scores on labelled questions (answer metrics only when `model` is given), recorded in the
    registry against the index."""
    rows = read_questions(questions)[:limit]
    store, query_embedder = open_for_query(index, embedder)
    try:
        rankings = [[hit.source for hit in search(store, query_embedder, row["question"], k=k, mode=mode)]
                    for row in rows]
        scores: dict[str, float] = retrieval_scores(rankings, [row["sources"] for row in rows], k)
        report: dict[str, Any] = {"questions": len(rows), "mode": mode, "k": k, "scores": scores}
        if model is not None:
            llm = load_llm(model, device=device)
            judge_llm = llm if judge in (None, model) else load_llm(judge, device=device)
            report.update(_answer_scores(store, query_embedder, llm, judge_llm, rows, k))
            report["model"], report["judge"] = llm.name, judge_llm.name
    finally:
        store.close()
    _record(index, questions, report)
    return report


def _answer_scores(store, embedder: Embedder, llm: LLM, judge: LLM, rows: list[dict], k: int) -> dict[str, Any]:
    per_metric: dict[str, list[float | None]] = {m: [] for m in
                                                 ("context_precision", "context_recall", "faithfulness", "answer_relevancy")}
    failures = 0
    answers = []
    for row in rows:
        result = ask(store, embedder, llm, row["question"], k=k, min_similarity=-1.0)  # judged, never refused
        contexts, answer = [hit.text for hit in result.context], result.answer
        precision, f1 = context_precision(judge, row["question"], row["answer"], contexts)
        recall, f2 = context_recall(judge, row["answer"], contexts)
        faithful, f3 = faithfulness(judge, answer, contexts)
        failures += f1 + f2 + f3
        for metric, value in (("context_precision", precision), ("context_recall", recall),
                              ("faithfulness", faithful),
                              ("answer_relevancy", answer_relevancy(judge, embedder, row["question"], answer))):
            per_metric[metric].append(value)
        answers.append({"question": row["question"], "answer": answer, "reference": row["answer"]})
    scores = {metric: value for metric, value in ((m, _mean(v)) for m, v in per_metric.items()) if value is not None}
    return {"answer_scores": scores, "parse_failures": failures, "answers": answers}


def _record(index: str, questions: str, report: dict[str, Any]) -> None:
    artifact = registry.find_by_path(index_path(index))
    if artifact is None:
        return
    details = {key: report.get(key) for key in ("mode", "k", "model", "judge", "parse_failures", "questions")}
    for metric, value in {**report["scores"], **report.get("answer_scores", {})}.items():
        registry.add_score(artifact.id, metric, value, dataset=questions, details=details)
