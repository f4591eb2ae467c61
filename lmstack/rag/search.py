"""`lmstack rag search`: dense (vectors), BM25 (keywords) or hybrid retrieval.

Hybrid fuses the two rankings with reciprocal rank fusion: a chunk's score is the sum over the
rankings it appears in of 1 / (k + rank), k = 60 (Cormack et al., 2009). RRF needs no score
calibration between cosine similarities and BM25 values, which live on unrelated scales.
"""

from __future__ import annotations

from typing import Any

from lmstack.errors import LmstackError
from lmstack.rag.embeddings import Embedder, embed
from lmstack.rag.store import Hit, Store

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60


def reciprocal_rank_fusion(rankings: list[list[Hit]], k: int = RRF_K) -> list[Hit]:
    """One ranking from several, by summed 1/(k + rank) (rank from 1); ties keep first-seen order."""
    fused: dict[int, Hit] = {}
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            fused.setdefault(hit.id, hit)
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (k + rank)
    order = sorted(scores, key=lambda hit_id: -scores[hit_id])
    return [Hit(i, fused[i].source, fused[i].text, scores[i], fused[i].metadata) for i in order]


def search(store: Store, embedder: Embedder | None, query: str, *, k: int = 10, mode: str = "hybrid",
           where: dict[str, Any] | None = None, depth: int | None = None) -> list[Hit]:
    """The k best chunks for `query`. Hybrid fuses the top `depth` (default max(k, 20)) of each."""
    if mode not in MODES:
        raise LmstackError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if not query.strip():
        raise LmstackError("the query is empty; give some words to search for")
    if mode == "bm25":
        return store.keyword(query, k, where)
    if embedder is None:
        raise LmstackError(f"{mode} search needs the index's embedder")
    vector = embed(embedder, [query])[0]
    if mode == "dense":
        return store.dense(vector, k, where)
    depth = depth or max(k, 20)
    return reciprocal_rank_fusion([store.dense(vector, depth, where), store.keyword(query, depth, where)])[:k]
