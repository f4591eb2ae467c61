"""Retrieval scores on labelled questions: hit rate@k, MRR@k and nDCG@k.

A retrieved chunk is relevant when its source is one of the question's labelled `sources` (a
label matches a path that ends with it, so labels can be file names). Relevance is per source:
a second chunk of an already-found source earns nothing, so a ranking is not rewarded for
repeating itself, and the ideal ranking puts each labelled source once at the top.
"""

from __future__ import annotations

import math
from pathlib import PurePath


def is_relevant(source: str, labels: list[str]) -> bool:
    parts = PurePath(source).parts
    return any(parts[-len(PurePath(label).parts):] == PurePath(label).parts for label in labels)


def relevance(sources: list[str], labels: list[str], k: int) -> list[int]:
    """1 where the ranked source is labelled and not yet seen, else 0, for the top k."""
    gains, seen = [], set()
    for source in sources[:k]:
        hit = is_relevant(source, labels) and source not in seen
        seen.add(source)
        gains.append(int(hit))
    return gains


def hit_rate(sources: list[str], labels: list[str], k: int) -> float:
    return float(any(relevance(sources, labels, k)))


def reciprocal_rank(sources: list[str], labels: list[str], k: int) -> float:
    gains = relevance(sources, labels, k)
    return next((1.0 / rank for rank, gain in enumerate(gains, 1) if gain), 0.0)


def ndcg(sources: list[str], labels: list[str], k: int) -> float:
    gains = relevance(sources, labels, k)
    dcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(labels), k) + 1))
    return dcg / ideal if ideal else 0.0


def retrieval_scores(rankings: list[list[str]], labels: list[list[str]], k: int) -> dict[str, float]:
    """Mean hit rate, MRR and nDCG at k over questions (each a ranked list of sources)."""
    n = max(len(rankings), 1)
    return {
        f"hit_rate@{k}": sum(hit_rate(r, l, k) for r, l in zip(rankings, labels)) / n,
        f"mrr@{k}": sum(reciprocal_rank(r, l, k) for r, l in zip(rankings, labels)) / n,
        f"ndcg@{k}": sum(ndcg(r, l, k) for r, l in zip(rankings, labels)) / n,
    }
