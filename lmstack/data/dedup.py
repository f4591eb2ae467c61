"""Deduplication: exact copies by hash, near-duplicates by MinHash LSH (`datasketch`).

Exact: texts equal after lower-casing and collapsing whitespace share a SHA-1; the first stays.
Near: each remaining text becomes the set of its word 5-grams; MinHash estimates the Jaccard
similarity of two sets from `num_perm` hashed permutations, and LSH (banded signatures) finds the
candidate pairs above `threshold` without comparing every pair. Candidates are confirmed with the
signatures' own Jaccard estimate (LSH alone has false positives), and a duplicate is attached
to the earliest kept text it matches; each cluster keeps its first member.

Signatures are computed with `MinHash.bulk` in worker processes, hashing shingles with CRC32
(C speed, the same in every process) instead of datasketch's default SHA-1 per shingle.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from lmstack.errors import LmstackError

_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Cluster:
    """Records that are (near-)copies of each other: `kept` stays, `removed` go."""

    kept: int
    removed: list[int]
    kind: str  # exact | near


@dataclass
class DedupResult:
    keep: list[int]  # indices of the records that stay, in order
    clusters: list[Cluster] = field(default_factory=list)

    @property
    def removed_exact(self) -> int:
        return sum(len(c.removed) for c in self.clusters if c.kind == "exact")

    @property
    def removed_near(self) -> int:
        return sum(len(c.removed) for c in self.clusters if c.kind == "near")


def normalized(text: str) -> str:
    return _SPACES.sub(" ", text.lower()).strip()


def shingles(text: str, ngram: int = 5) -> set[bytes]:
    """Word n-grams of a text (the whole text when it has fewer than `ngram` words)."""
    words = _WORD.findall(text.lower())
    if len(words) <= ngram:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)}


def crc32_hash(data: bytes) -> int:
    return zlib.crc32(data)


def signatures(texts: Sequence[str], *, num_perm: int = 128, ngram: int = 5, seed: int = 1,
               workers: int = 1) -> list:
    """A MinHash (datasketch `LeanMinHash`) of every text's shingle set, in `workers` processes."""
    if workers <= 1 or len(texts) < 2000:
        return _signature_chunk(list(texts), num_perm, ngram, seed)
    size = -(-len(texts) // (workers * 4))
    chunks = [list(texts[i:i + size]) for i in range(0, len(texts), size)]
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(_signature_chunk, chunks, [num_perm] * len(chunks), [ngram] * len(chunks),
                         [seed] * len(chunks))
        return [signature for part in parts for signature in part]


def _signature_chunk(texts: list[str], num_perm: int, ngram: int, seed: int) -> list:
    from datasketch import LeanMinHash, MinHash

    hashes = MinHash.bulk((shingles(text, ngram) for text in texts), num_perm=num_perm, seed=seed,
                          hashfunc=crc32_hash)
    return [LeanMinHash(h) for h in hashes]


class Deduplicator:
    """Streaming dedup: feed batches of texts, get back which to keep.

    A text is a duplicate of an earlier kept text when their normalized forms are equal (exact)
    or their estimated Jaccard similarity reaches `threshold` (near). Only kept texts are indexed,
    so memory grows with the unique documents (one signature of `num_perm` integers each) and a
    corpus larger than memory streams through in batches.
    """

    def __init__(self, *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, near: bool = True,
                 workers: int = 1):
        if not 0 < threshold <= 1:
            raise LmstackError(f"threshold must be in (0, 1], got {threshold}; 0.8 is a common choice")
        from datasketch import MinHashLSH

        self.threshold, self.num_perm, self.ngram, self.near, self.workers = threshold, num_perm, ngram, near, workers
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.first_of: dict[str, int] = {}  # digest of a normalized text -> index of its first copy
        self.signature_of: dict[int, Any] = {}  # kept index -> MinHash
        self.clusters: dict[tuple[int, str], Cluster] = {}
        self.count = 0

    def keep(self, texts: Sequence[str]) -> list[bool]:
        """For each text of the batch, whether it is the first of its kind seen so far."""
        start, self.count = self.count, self.count + len(texts)
        verdicts = [True] * len(texts)
        fresh = []
        for offset, text in enumerate(texts):
            digest = hashlib.sha1(normalized(text).encode()).hexdigest()
            if digest in self.first_of:
                verdicts[offset] = False
                self._add_to_cluster(self.first_of[digest], start + offset, "exact")
            else:
                self.first_of[digest] = start + offset
                fresh.append(offset)
        if not self.near or not fresh:
            return verdicts
        hashes = signatures([texts[i] for i in fresh], num_perm=self.num_perm, ngram=self.ngram,
                            workers=self.workers)
        for offset, signature in zip(fresh, hashes):
            match = min((other for other in self.lsh.query(signature)
                         if signature.jaccard(self.signature_of[other]) >= self.threshold), default=None)
            if match is None:
                self.lsh.insert(start + offset, signature)
                self.signature_of[start + offset] = signature
            else:
                verdicts[offset] = False
                self._add_to_cluster(match, start + offset, "near")
        return verdicts

    def _add_to_cluster(self, kept: int, removed: int, kind: str) -> None:
        self.clusters.setdefault((kept, kind), Cluster(kept, [], kind)).removed.append(removed)

    def result(self, keep: list[int]) -> DedupResult:
        return DedupResult(keep, list(self.clusters.values()))


def deduplicate(texts: Sequence[str], **settings: Any) -> DedupResult:
    """Which texts to keep: the first of every exact copy and of every near-duplicate cluster.

    `settings` are `Deduplicator`'s (threshold, num_perm, ngram, near, workers).
    """
    deduplicator = Deduplicator(**settings)
    verdicts = deduplicator.keep(texts)
    return deduplicator.result([i for i, keep in enumerate(verdicts) if keep])


def record_text(record: dict[str, Any]) -> str:
    """The text of a normalized record that dedup, filters and decontamination look at."""
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"])
    if "text" in record:
        return record["text"]
    prompt = record.get("prompt") or []
    prompt_text = "\n".join(m["content"] for m in prompt) if isinstance(prompt, list) else str(prompt)
    answers = [record[k] for k in ("chosen", "rejected", "completion") if isinstance(record.get(k), str)]
    return "\n".join([prompt_text, *answers])
