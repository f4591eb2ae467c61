"""A pre-training corpus: raw text files, folders, JSONL or Parquet, read as a stream of documents,
cleaned by rule filters and near-deduplicated on the way.

    documents(paths)           every document, one at a time (a file, a record's text)
    clean_documents(paths)     the same, less those a rule or the deduplicator rejects, with counts

Nothing here holds the whole corpus: documents are yielded one by one and deduplicated in
batches, so a corpus larger than memory streams into token shards (`shards.py`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from lmstack.data.dedup import Deduplicator, record_text
from lmstack.data.filters import FilterRules, check_text
from lmstack.data.formats import normalize_record
from lmstack.data.io import SUPPORTED_SUFFIXES as RECORD_SUFFIXES
from lmstack.data.io import dataset_path, read_source
from lmstack.errors import LmstackError
from lmstack.inputs import check_dir, check_file, decode_utf8

# In a folder, files with these suffixes are read as plain text (records files as records).
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".py")


@dataclass
class CorpusStats:
    """What the pipeline read, and what it dropped and why."""

    files: int = 0
    documents: int = 0
    kept: int = 0
    bytes_kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> documents

    def summary(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in self.dropped.most_common()) or "none"
        return (f"{self.files} files, {self.documents} documents, kept {self.kept} "
                f"({self.bytes_kept / 1e6:.1f} MB); dropped: {reasons}")


def corpus_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The files a corpus names (folders walked in sorted order), checked to exist and hold data."""
    if not paths:
        raise LmstackError("no corpus given; pass text files, folders, JSONL or Parquet files")
    files: list[Path] = []
    for given in paths:
        path = dataset_path(str(given))
        if path.is_dir():
            check_dir(path, "corpus folder")
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in
                           TEXT_SUFFIXES + RECORD_SUFFIXES and not any(part.startswith(".") for part in
                                                                     p.relative_to(path).parts))
            if not found:
                raise LmstackError(f"{path} holds no text files ({', '.join(TEXT_SUFFIXES + RECORD_SUFFIXES)})")
            files += found
        else:
            files.append(check_file(path, "corpus file"))
    return files


def documents(paths: Sequence[str | os.PathLike], stats: CorpusStats | None = None) -> Iterator[str]:
    """Every document of the corpus: a whole text file, or the text of each record of a records file.

    A file named directly must be UTF-8 text (a clear error otherwise); inside a folder, files that
    are not UTF-8 text are skipped and counted under `not_text`.
    """
    stats = stats if stats is not None else CorpusStats()
    named = {Path(dataset_path(str(p))) for p in paths}
    for path in corpus_files(paths):
        stats.files += 1
        if path.suffix.lower() in RECORD_SUFFIXES:
            source = read_source(path)
            for index, record in enumerate(source.records):
                stats.documents += 1
                yield record_text(normalize_record(record, where=source.where(index)))
            continue
        try:
            text = decode_utf8(path.read_bytes(), str(path)).removeprefix("\ufeff")
        except LmstackError:
            if path in named:
                raise
            stats.documents += 1
            stats.dropped["not_text"] += 1
            continue
        stats.documents += 1
        yield text


def clean_documents(paths: Sequence[str | os.PathLike], *, rules: FilterRules | None = None,
                    dedup: bool = True, threshold: float = 0.8, batch_size: int = 512, workers: int = 1,
                    stats: CorpusStats | None = None) -> Iterator[str]:
    """The corpus's documents that pass the rule filters and are not (near-)copies of an earlier one."""
    stats = stats if stats is not None else CorpusStats()
    deduplicator = Deduplicator(threshold=threshold, workers=workers) if dedup else None
    batch: list[str] = []
    for text in documents(paths, stats):
        reason = check_text(text, rules) if rules is not None else ("empty" if not text.strip() else None)
        if reason:
            stats.dropped[reason] += 1
            continue
        batch.append(text)
        if len(batch) == batch_size:
            yield from _unique(batch, deduplicator, stats)
            batch = []
    yield from _unique(batch, deduplicator, stats)
    if stats.kept == 0:
        raise LmstackError(f"the corpus has no text left to train on ({stats.summary()}); give more or other text")


def _unique(batch: list[str], deduplicator: Deduplicator | None, stats: CorpusStats) -> Iterable[str]:
    verdicts = deduplicator.keep(batch) if deduplicator else [True] * len(batch)
    for text, keep in zip(batch, verdicts):
        if keep:
            stats.kept += 1
            stats.bytes_kept += len(text.encode())
            yield text
        else:
            stats.dropped["duplicate"] += 1
