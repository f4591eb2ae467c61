"""`lmstack rag ask`: retrieve, re-rank, assemble a context that fits, answer with citations.

1. Queries: the question, plus (`multi_query`) rewrites by the LLM and (`hyde`) a hypothetical
   answer passage, whose embedding often lands nearer the real passage than the question's.
2. Each query retrieves hybrid candidates; the rankings are fused with RRF.
3. Re-ranking: `llm` scores each candidate by the model's P(Yes) to "is this passage relevant?";
   `cross-encoder` scores (question, passage) pairs with a BERT cross-encoder; `none` keeps RRF.
4. Nothing relevant (no candidate shares a content word with the question, and none is at
   least `min_similarity` close to it) gives a refusal instead of an answer made up from
   unrelated text.
5. Numbered passages are added best first while they fit the model's window, and the answer's
   [n] markers are mapped back to the chunks they cite.

With `graph`, the chunks behind knowledge-graph facts near the question's entities
(`lmstack.rag.graph`) join the candidates as one more ranking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lmstack.errors import LmstackError
from lmstack.rag.embeddings import Embedder, embed
from lmstack.hub.llm import LLM
from lmstack.rag.search import reciprocal_rank_fusion
from lmstack.rag.store import Hit, Store

RERANKERS = ("none", "llm", "cross-encoder")
REFUSAL = "I don't know: nothing in the index is relevant to this question."

ANSWER_SYSTEM = ("You answer questions using only the numbered sources given. Cite the sources you use "
                 "with their numbers in brackets, like [1]. If the sources do not answer the question, "
                 "say that you don't know.")


@dataclass
class Answer:
    answer: str
    citations: list[dict[str, Any]]  # [{"n", "source", "text"}] for each [n] the answer cites
    context: list[Hit] = field(default_factory=list)  # every numbered passage the model saw
    queries: list[str] = field(default_factory=list)
    refused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "citations": self.citations,
                "context": [{"n": n, **hit.to_dict()} for n, hit in enumerate(self.context, 1)],
                "queries": self.queries, "refused": self.refused}


def rewrite_queries(llm: LLM, question: str, n: int) -> list[str]:
    """Up to `n` rephrasings of the question, one per line of the model's reply."""
    prompt = (f"Write {n} different search queries that would find the answer to this question, "
              f"one per line, without numbering.\nQuestion: {question}")
    reply = llm.complete([prompt], max_new_tokens=24 * n)[0]
    lines = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", line).strip() for line in reply.splitlines()]
    return [line for line in dict.fromkeys(lines) if line and line.lower() != question.lower()][:n]


def hypothetical_document(llm: LLM, question: str) -> str:
    """HyDE: a short passage that would answer the question (its facts may be wrong; only its
    wording is used, to search)."""
    prompt = f"Write a short passage that answers the question.\nQuestion: {question}\nPassage:"
    return llm.complete([prompt], max_new_tokens=96)[0]


def relevance_prompt(question: str, passage: str) -> str:
    return (f"Passage:\n{passage}\n\nQuestion: {question}\n"
            "Does the passage contain information that helps answer the question? Answer Yes or No.")


def rerank(hits: list[Hit], question: str, method: str, llm: LLM | None = None, cross_encoder: Any = None) -> list[Hit]:
    """`hits` reordered by the re-ranker's score (stored in `score`)."""
    if method == "none" or not hits:
        return hits
    if method == "llm":
        if llm is None:
            raise LmstackError("LLM re-ranking needs a model")
        scores = llm.yes_probability([relevance_prompt(question, hit.text) for hit in hits])
    elif method == "cross-encoder":
        if cross_encoder is None:
            raise LmstackError("cross-encoder re-ranking needs --cross-encoder DIR (a BERT cross-encoder)")
        scores = cross_encoder.score(question, [hit.text for hit in hits])
    else:
        raise LmstackError(f"unknown re-ranker {method!r}; use one of {', '.join(RERANKERS)}")
    ranked = sorted(zip(scores, range(len(hits))), key=lambda pair: -pair[0])
    return [Hit(hits[i].id, hits[i].source, hits[i].text, float(s), hits[i].metadata) for s, i in ranked]


def assemble_context(hits: list[Hit], question: str, llm: LLM, max_new_tokens: int,
                     preamble: str = "") -> tuple[str, list[Hit]]:
    """The prompt with as many numbered passages (best first) as fit the window, and those passages."""
    budget = llm.context_window - max_new_tokens - llm.count_tokens(ANSWER_SYSTEM + preamble + question) - 64
    used: list[Hit] = []
    blocks: list[str] = []
    for hit in hits:
        block = f"[{len(used) + 1}] ({_label(hit)})\n{hit.text}"
        cost = llm.count_tokens(block) + 2
        if cost > budget:
            continue  # a long passage may not fit where a shorter later one does
        budget -= cost
        used.append(hit)
        blocks.append(block)
    if not used:
        raise LmstackError("no passage fits the model's window; use a smaller --chunk-size or a longer-context model")
    head = f"{preamble}\n\n" if preamble else ""
    prompt = head + "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer (cite sources like [1]):"
    return prompt, used


def _label(hit: Hit) -> str:
    name = hit.source.rsplit("/", 1)[-1]
    where = hit.metadata.get("headers") or (f"page {hit.metadata['page']}" if "page" in hit.metadata else "")
    return f"{name}, {where}" if where else name


def citations_in(answer: str, context: list[Hit]) -> list[dict[str, Any]]:
    """Each [n] (or [n, m]) the answer cites, in order of first use, mapped to its passage."""
    cited: list[int] = []
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer):
        cited += [int(n) for n in group.split(",")]
    return [{"n": n, "source": context[n - 1].source, "text": context[n - 1].text}
            for n in dict.fromkeys(cited) if 1 <= n <= len(context)]


def retrieve(
    store: Store,
    embedder: Embedder,
    llm: LLM | None,
    question: str,
    *,
    k: int = 5,
    fetch_k: int = 20,
    multi_query: int = 0,
    hyde: bool = False,
    reranker: str = "none",
    cross_encoder: Any = None,
    min_similarity: float = 0.35,
    where: dict[str, Any] | None = None,
    graph: bool = False,
) -> tuple[list[Hit], list[str]]:
    """(the best relevant passages, at most k, best first; the queries searched). No passage
    means nothing relevant was found."""
    if not question.strip():
        raise LmstackError("the question is empty; ask something")
    if reranker not in RERANKERS:
        raise LmstackError(f"unknown re-ranker {reranker!r}; use one of {', '.join(RERANKERS)}")
    if (multi_query or hyde or reranker == "llm") and llm is None:
        raise LmstackError("query rewriting, HyDE and LLM re-ranking need a model")
    queries = [question] + (rewrite_queries(llm, question, multi_query) if multi_query else [])
    dense_texts = list(queries) + ([hypothetical_document(llm, question)] if hyde else [])
    vectors = embed(embedder, dense_texts)
    rankings = [store.dense(vector, fetch_k, where) for vector in vectors]
    rankings += [store.keyword(query, fetch_k, where) for query in queries]
    if graph:
        from lmstack.rag.graph import graph_hits

        rankings.append(graph_hits(store, question, fetch_k))
    candidates = reciprocal_rank_fusion(rankings)[:fetch_k]
    # Relevance gate on the question itself: a candidate shares a content word with it (BM25
    # matched it; function words are not searched), or its vector is close to the question's.
    keyword_ids = {hit.id for hit in rankings[len(vectors)]}
    similarity = store.vectors([hit.id for hit in candidates]) @ vectors[0]
    relevant = [hit for hit, s in zip(candidates, similarity) if s >= min_similarity or hit.id in keyword_ids]
    return rerank(relevant, question, reranker, llm, cross_encoder)[:k], queries


def ask(store: Store, embedder: Embedder, llm: LLM, question: str, *, max_new_tokens: int = 200,
        **retrieval: Any) -> Answer:
    """Answer `question` from the index with numbered citations, or refuse when nothing is relevant.

    `retrieval` takes `retrieve`'s keywords (k, multi_query, hyde, reranker, min_similarity, ...).
    """
    hits, queries = retrieve(store, embedder, llm, question, **retrieval)
    if not hits:
        return Answer(REFUSAL, [], [], queries, refused=True)
    prompt, context = assemble_context(hits, question, llm, max_new_tokens)
    text = llm.complete([prompt], system=ANSWER_SYSTEM, max_new_tokens=max_new_tokens)[0]
    return Answer(text, citations_in(text, context), context, queries)
