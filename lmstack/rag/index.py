"""`lmstack rag index PATH --index INDEX`: walk, load, split, embed and store, re-doing only what changed.

A file whose content hash is the one recorded in the index is left alone; a changed file has its
old chunks replaced in one transaction; a file gone from PATH is deleted from the index. Every
file is committed on its own, so a crash or a bad file never loses what was already indexed, and
files that cannot be read are skipped and listed in the summary.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.home import lmstack_home
from lmstack.rag.embeddings import DEFAULT_EMBEDDER, Embedder, EmbeddingCache, embed, load_embedder
from lmstack.rag.loaders import Skipped, Unreadable, find_files, load_file
from lmstack.rag.splitters import SplitterConfig, split_documents
from lmstack.rag.store import FileRecord, QdrantStore, SqliteStore, Store

INDEX_SUFFIX = ".sqlite"


@dataclass
class IndexSummary:
    index: str
    files_seen: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    registry_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_path(index: str | Path) -> Path:
    """INDEX as a file: a path (anything with a `/` or a suffix), else a name under the lmstack home."""
    text = str(index)
    if not text.strip():
        raise LmstackError("no index given; pass --index with a path or a name")
    if "/" in text or "\\" in text or Path(text).suffix:
        return Path(text).expanduser()
    if not all(c.isalnum() or c in "-_" for c in text):
        raise LmstackError(f"index name {text!r} may hold only letters, digits, '-' and '_'; or give a path")
    return lmstack_home() / "indexes" / f"{text}{INDEX_SUFFIX}"


def open_store(index: str | Path, create: dict[str, Any] | None = None) -> Store:
    """The store INDEX names: `qdrant:LOCATION#COLLECTION` (a folder for Qdrant's local mode, or a
    server URL), else a SQLite index file (a path or a name under the lmstack home)."""
    text = str(index)
    if text.startswith("qdrant:"):
        location, _, collection = text.removeprefix("qdrant:").partition("#")
        if not location:
            raise LmstackError(f"write a Qdrant index as qdrant:FOLDER_OR_URL#COLLECTION, got {text!r}")
        return QdrantStore(location, collection or "lmstack", create=create)
    return SqliteStore(index_path(index), create=create)


def open_index(index: str | Path, embedder: Embedder | None = None) -> Store:
    """An existing index; with `embedder`, refuse one built with a different embedding model."""
    store = open_store(index)
    if embedder is not None:
        check_embedder(store, embedder.name)
    return store


def check_embedder(store: Store, name: str) -> None:
    built_with = store.info().get("embedder")
    if built_with != name:
        raise LmstackError(f"the index was built with the embedder {built_with!r}, not {name!r}; "
                           f"pass --embedder {built_with} or rebuild the index")


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_index(
    path: str | Path,
    index: str | Path,
    *,
    embedder: str | Embedder = DEFAULT_EMBEDDER,
    splitter: SplitterConfig = SplitterConfig(),
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    batch_size: int = 32,
    prune: bool = True,
    progress: Callable[[str], None] | None = None,
) -> IndexSummary:
    """Index every file under `path` into `index` (created if new); return what was done.

    `prune` deletes from the index the files under `path` that are no longer there.
    """
    started = time.perf_counter()
    root = Path(path).expanduser()
    files = find_files(root, include, exclude)  # checks PATH before any model loads
    if not files:
        raise LmstackError(f"no files to index under {root} (an empty folder, or --include/--exclude "
                           "left nothing); supported: text, Markdown, HTML, PDF, JSON/JSONL, CSV, source code")
    qdrant = str(index).startswith("qdrant:")
    target = Path(str(index)) if qdrant else index_path(index)
    if not qdrant and target.exists() and target.is_dir():
        raise LmstackError(f"{target} is a folder; the index is a file (give a file path or a name)")
    model = load_embedder(embedder) if isinstance(embedder, str) else embedder
    settings = {"embedder": model.name, "dimension": model.dimension, "splitter": asdict(splitter)}
    store = open_store(index, create=settings)
    summary = IndexSummary(index=str(index) if qdrant else str(target), files_seen=len(files))
    cache = EmbeddingCache()
    try:
        check_embedder(store, model.name)
        if store.info().get("splitter") != settings["splitter"] and store.count():
            raise LmstackError(f"{target} was split with {store.info().get('splitter')}; use the same splitter "
                               "settings, or index into a new --index")
        known = store.files()
        for file in files:
            source = str(file.resolve())
            digest = file_hash(file)
            if source in known and known[source].sha256 == digest:
                summary.unchanged += 1
                continue
            try:
                documents = load_file(file)
            except Unreadable as reason:
                summary.skipped.append(Skipped(source, str(reason)))
                continue
            for document in documents:
                document.source = source
            spans = getattr(model, "token_spans", None)
            chunks = split_documents(documents, splitter, spans)
            vectors = embed(model, [c.text for c in chunks], batch_size=batch_size, cache=cache)
            store.add(FileRecord(source, digest, len(chunks)), chunks, vectors)
            (summary.updated if source in known else summary.added).append(source)
            summary.chunks_embedded += len(chunks)
            if progress:
                progress(f"{source}: {len(chunks)} chunks")
        if prune:
            under = str(root.resolve())
            present = {str(f.resolve()) for f in files}
            for gone in sorted(p for p in known if p not in present and (p == under or p.startswith(under + "/"))):
                store.delete(gone)
                summary.deleted.append(gone)
        summary.chunks_total = store.count()
        roots = sorted({*store.info().get("sources", []), str(root.resolve())})
        files_indexed = len(store.files())
        store.set_info(sources=roots)
    finally:
        store.close()
        cache.close()
    summary.registry_id = registry.record(
        "index", target if not qdrant else str(index).removeprefix("qdrant:").split("#")[0], name=target.stem, operation="rag-index",
        recipe={"embedder": model.name, "splitter": asdict(splitter), "include": include, "exclude": exclude},
        datasets=roots,
        metadata={"sources": roots, "chunks": summary.chunks_total, "files": files_indexed,
                  "embedder": model.name, "dimension": model.dimension},
    )
    summary.seconds = time.perf_counter() - started
    return summary


def open_for_query(index: str | Path, embedder: str | None = None, need_embedder: bool = True):
    """(store, embedder) for searching: the embedder the index was built with unless one is named
    (a different one is refused, since its vectors live in another space)."""
    store = open_index(index)
    try:
        name = embedder or store.info()["embedder"]
        check_embedder(store, name)
        return store, load_embedder(name) if need_embedder else None
    except BaseException:
        store.close()
        raise


def load_cross_encoder(directory: str | Path | None, reranker: str):
    """The cross-encoder scorer when `reranker` asks for one (a BERT pair classifier directory)."""
    if reranker != "cross-encoder":
        return None
    if directory is None:
        raise LmstackError("--rerank cross-encoder needs --cross-encoder DIR (a BertForSequenceClassification directory)")
    from lmstack.inputs import check_dir
    from lmstack.rag.embeddings import CrossEncoderScorer

    return CrossEncoderScorer(check_dir(directory, "cross-encoder directory"))
