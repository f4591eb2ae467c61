"""Vector stores: chunks, their vectors and a BM25 index, behind one small interface.

`SqliteStore` keeps everything in ONE embedded SQLite file: chunk text and metadata in plain
tables, vectors in a `sqlite-vec` `vec0` table (exact k-nearest-neighbour search, cosine
distance), and an FTS5 table for BM25 keyword search. `QdrantStore` is the same interface on
Qdrant (`qdrant-client`; its local mode for tests, a server or cluster URL in production).

Both record which embedder made the vectors: searching an index with another embedder's vectors
would silently return nonsense, so it is refused.

Python's own `sqlite3` is often built without extension loading; `sqlean.py` (a drop-in
`sqlite3` with loading enabled and FTS5 built in) is used to load sqlite-vec.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from lmstack.errors import LmstackError
from lmstack.rag.splitters import Chunk

SCHEMA_VERSION = 1


@dataclass
class Hit:
    id: int
    source: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "text": self.text, "score": self.score, "metadata": self.metadata}


@dataclass
class FileRecord:
    path: str
    sha256: str
    chunks: int


class Store(Protocol):
    """What indexing and retrieval need from a vector store."""

    def info(self) -> dict[str, Any]:
        """Settings recorded at creation: embedder, dimension, splitter, ..."""
        ...

    def files(self) -> dict[str, FileRecord]: ...

    def add(self, file: FileRecord, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Replace everything indexed from `file.path` with these chunks, in one transaction."""
        ...

    def delete(self, path: str) -> int:
        """Remove a file's chunks; the number removed."""
        ...

    def dense(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Hit]: ...

    def keyword(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[Hit]: ...

    def vectors(self, ids: list[int]) -> np.ndarray:
        """The stored vectors of these chunks, in order."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def connect_sqlite(path: str | Path):
    """A connection with sqlite-vec loaded (through sqlean.py, whose SQLite allows extensions)."""
    import sqlean
    import sqlite_vec

    connection = sqlean.connect(str(path), timeout=60, isolation_level=None)
    connection.enable_load_extension(True)
    sqlite_vec.load(connection)
    connection.enable_load_extension(False)
    return connection


def _matches(metadata: dict[str, Any], source: str, where: dict[str, Any] | None) -> bool:
    """A metadata filter: every key must equal (or, given a list, be one of) the value; `source`
    may also be a glob prefix ending in `*`."""
    for key, wanted in (where or {}).items():
        value = source if key == "source" else metadata.get(key)
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(value == option or (isinstance(option, str) and option.endswith("*") and isinstance(value, str)
                                       and value.startswith(option[:-1])) for option in options):
            return False
    return True


class SqliteStore:
    """The default store: one SQLite file with sqlite-vec vectors and an FTS5 BM25 index."""

    def __init__(self, path: str | Path, *, create: dict[str, Any] | None = None):
        """Open the store at `path`; with `create` (its settings), make it if it does not exist."""
        self.path = Path(path)
        exists = self.path.is_file()
        if not exists and create is None:
            raise LmstackError(f"no index at {self.path}; build one with `lmstack rag index PATH --index {self.path}`")
        if exists and not _is_sqlite(self.path):
            raise LmstackError(f"{self.path} is not an lmstack index (not a SQLite file); choose another --index")
        self.connection = connect_sqlite(self.path)
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA busy_timeout = 60000")
        if not exists or not self._has_table("meta"):
            self._create(create or {})
        self._info = {key: json.loads(value) for key, value in self.connection.execute("SELECT key, value FROM meta")}
        if "dimension" not in self._info:
            raise LmstackError(f"{self.path} is not an lmstack index (no settings); choose another --index")

    def _has_table(self, name: str) -> bool:
        return self.connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None

    def _create(self, settings: dict[str, Any]) -> None:
        dimension = int(settings["dimension"])
        with self.transaction():  # all tables or none
            for statement in (
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                "CREATE TABLE files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL)",
                "CREATE TABLE chunks (id INTEGER PRIMARY KEY, source TEXT NOT NULL, text TEXT NOT NULL,"
                " metadata TEXT NOT NULL)",
                "CREATE INDEX chunks_by_source ON chunks(source)",
                "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, tokenize = 'porter unicode61')",
                f"CREATE VIRTUAL TABLE vectors USING vec0(embedding float[{dimension}] distance_metric=cosine)",
            ):
                self.connection.execute(statement)
            self.connection.executemany("INSERT INTO meta VALUES (?, ?)",
                                        [(k, json.dumps(v)) for k, v in {**settings, "schema": SCHEMA_VERSION}.items()])

    def transaction(self):
        return _Transaction(self.connection)

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def set_info(self, **values: Any) -> None:
        with self.transaction():
            self.connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                        [(k, json.dumps(v)) for k, v in values.items()])
        self._info.update(values)

    def files(self) -> dict[str, FileRecord]:
        return {path: FileRecord(path, sha, n) for path, sha, n in self.connection.execute("SELECT * FROM files")}

    def add(self, file: FileRecord, chunks: list[Chunk], vectors: np.ndarray) -> None:
        with self.transaction():
            self._delete(file.path)
            for chunk, vector in zip(chunks, vectors):
                cursor = self.connection.execute("INSERT INTO chunks (source, text, metadata) VALUES (?, ?, ?)",
                                                 (chunk.source, chunk.text, json.dumps(chunk.metadata)))
                rowid = cursor.lastrowid
                self.connection.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (rowid, chunk.text))
                self.connection.execute("INSERT INTO vectors (rowid, embedding) VALUES (?, ?)",
                                        (rowid, np.asarray(vector, dtype=np.float32).tobytes()))
            self.connection.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (file.path, file.sha256, len(chunks)))

    def delete(self, path: str) -> int:
        with self.transaction():
            return self._delete(path)

    def _delete(self, path: str) -> int:
        ids = [row[0] for row in self.connection.execute("SELECT id FROM chunks WHERE source = ?", (path,))]
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for table, column in (("chunks", "id"), ("chunks_fts", "rowid"), ("vectors", "rowid")):
                self.connection.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", part)
        self.connection.execute("DELETE FROM files WHERE path = ?", (path,))
        return len(ids)

    def count(self) -> int:
        return self.connection.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def vectors(self, ids: list[int]) -> np.ndarray:
        found = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for rowid, blob in self.connection.execute(
                    f"SELECT rowid, embedding FROM vectors WHERE rowid IN ({marks})", part):
                found[rowid] = np.frombuffer(blob, dtype=np.float32)
        return np.stack([found[i] for i in ids]) if ids else np.zeros((0, self._info["dimension"]), np.float32)

    def chunks(self, ids: Iterable[int]) -> dict[int, tuple[str, str, dict]]:
        ids = list(ids)
        found = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for rowid, source, text, metadata in self.connection.execute(
                    f"SELECT id, source, text, metadata FROM chunks WHERE id IN ({marks})", part):
                found[rowid] = (source, text, json.loads(metadata))
        return found

    def _hits(self, scored: list[tuple[int, float]], k: int, where: dict[str, Any] | None) -> list[Hit]:
        rows = self.chunks(rowid for rowid, _ in scored)
        hits = [Hit(rowid, *rows[rowid][:2], score, rows[rowid][2]) for rowid, score in scored if rowid in rows]
        return [hit for hit in hits if _matches(hit.metadata, hit.source, where)][:k]

    def dense(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        """The k chunks nearest the query vector (score: cosine similarity)."""
        self._check_dimension(vector)
        total = self.count()
        if total == 0:
            return []
        # With a filter, ask for more neighbours and filter them (growing until k pass or all are seen).
        want = k if not where else min(total, 4 * k)
        while True:
            rows = self.connection.execute(
                "SELECT rowid, distance FROM vectors WHERE embedding MATCH ? AND k = ? ORDER BY distance",
                (np.asarray(vector, dtype=np.float32).tobytes(), min(want, 4096))).fetchall()
            hits = self._hits([(rowid, 1.0 - distance) for rowid, distance in rows], k, where)
            if len(hits) >= k or want >= min(total, 4096):
                return hits
            want *= 4

    def keyword(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        """The k chunks with the best BM25 score for the query's words (any of them may match)."""
        expression = fts_query(query)
        if not expression:
            return []
        limit = k if not where else 20 * k
        rows = self.connection.execute(
            "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
            (expression, limit)).fetchall()
        return self._hits([(rowid, -score) for rowid, score in rows], k, where)  # FTS5's bm25 is negated

    def _check_dimension(self, vector: np.ndarray) -> None:
        if np.asarray(vector).shape[-1] != self._info["dimension"]:
            raise LmstackError(f"query vector has {np.asarray(vector).shape[-1]} dimensions, the index "
                               f"{self._info['dimension']}; search with the index's embedder ({self._info.get('embedder')})")

    def close(self) -> None:
        self.connection.close()


# Function words carry no topic: in an OR query they match nearly every chunk and drown the
# words that matter (BM25's IDF shrinks them, but over a small collection not enough).
STOPWORDS = frozenset("""a about after all also am an and any are as at be been before being but by can could did do
does doing for from had has have how i if in into is it its me my no not of on or our shall should so some than that
the their them then there these they this those to up was we were what when where which while who whom why will with
would you your""".split())


def fts_query(text: str) -> str:
    """A safe FTS5 expression: the text's words (function words dropped unless nothing else is
    left), quoted, joined with OR (BM25 ranks the matches)."""
    words = list(dict.fromkeys(re.findall(r"\w+", text.lower())))
    content = [word for word in words if word not in STOPWORDS] or words
    return " OR ".join(f'"{word}"' for word in content)


class _Transaction:
    def __init__(self, connection):
        self.connection = connection

    def __enter__(self):
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback):
        self.connection.execute("ROLLBACK" if kind else "COMMIT")
        return False


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        header = handle.read(16)
    return header == b"SQLite format 3\x00" or (header == b"" and path.stat().st_size == 0)


class QdrantStore:
    """The same interface on Qdrant: `location` is a folder (Qdrant's embedded local mode) or a
    server URL (`http://...`, a single node or a cluster). Chunks are points whose payload holds
    the source, text and metadata; settings live in a one-point side collection.

    Keyword search ranks the chunks that Qdrant's full-text payload index matches by how many of
    the query's content words they contain (term overlap, not BM25: Qdrant has no BM25 ranking
    without a sparse-vector model).
    """

    def __init__(self, location: str, collection: str = "lmstack", *, create: dict[str, Any] | None = None):
        from qdrant_client import QdrantClient, models

        self.models = models
        self.client = QdrantClient(url=location) if location.startswith(("http://", "https://")) else \
            QdrantClient(path=location)
        self.collection, self.meta = collection, f"{collection}__settings"
        if not self.client.collection_exists(self.meta):
            if create is None:
                raise LmstackError(f"no Qdrant collection {collection!r} at {location}; index into it first")
            dimension = int(create["dimension"])
            self.client.create_collection(collection, vectors_config=models.VectorParams(
                size=dimension, distance=models.Distance.COSINE))
            self.client.create_payload_index(collection, "text", models.TextIndexParams(
                type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=True))
            self.client.create_payload_index(collection, "source", models.PayloadSchemaType.KEYWORD)
            self.client.create_collection(self.meta, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT))
            self._save_info({**create, "schema": SCHEMA_VERSION, "files": {}, "next_id": 1})
        self._info = self.client.retrieve(self.meta, [0], with_payload=True)[0].payload

    def _save_info(self, info: dict[str, Any]) -> None:
        self.client.upsert(self.meta, [self.models.PointStruct(id=0, vector=[1.0], payload=info)])
        self._info = info

    def info(self) -> dict[str, Any]:
        return {k: v for k, v in self._info.items() if k not in ("files", "next_id")}

    def set_info(self, **values: Any) -> None:
        self._save_info({**self._info, **values})

    def files(self) -> dict[str, FileRecord]:
        return {path: FileRecord(path, sha, n) for path, (sha, n) in self._info["files"].items()}

    def add(self, file: FileRecord, chunks: list[Chunk], vectors: np.ndarray) -> None:
        self._delete_points(file.path)
        first = self._info["next_id"]
        points = [self.models.PointStruct(id=first + i, vector=np.asarray(v, dtype=np.float32).tolist(),
                                          payload={"source": c.source, "text": c.text, "metadata": c.metadata})
                  for i, (c, v) in enumerate(zip(chunks, vectors))]
        if points:
            self.client.upsert(self.collection, points)
        files = {**self._info["files"], file.path: [file.sha256, len(chunks)]}
        self._save_info({**self._info, "files": files, "next_id": first + len(chunks)})

    def _source_filter(self, path: str):
        m = self.models
        return m.Filter(must=[m.FieldCondition(key="source", match=m.MatchValue(value=path))])

    def _delete_points(self, path: str) -> int:
        count = self.client.count(self.collection, count_filter=self._source_filter(path), exact=True).count
        self.client.delete(self.collection, points_selector=self.models.FilterSelector(filter=self._source_filter(path)))
        return count

    def delete(self, path: str) -> int:
        removed = self._delete_points(path)
        self._save_info({**self._info, "files": {p: r for p, r in self._info["files"].items() if p != path}})
        return removed

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def vectors(self, ids: list[int]) -> np.ndarray:
        found = {p.id: p.vector for p in self.client.retrieve(self.collection, ids, with_vectors=True)}
        return np.asarray([found[i] for i in ids], dtype=np.float32).reshape(len(ids), self._info["dimension"])

    def chunks(self, ids: Iterable[int]) -> dict[int, tuple[str, str, dict]]:
        points = self.client.retrieve(self.collection, list(ids), with_payload=True)
        return {p.id: (p.payload["source"], p.payload["text"], p.payload["metadata"]) for p in points}

    def _hit(self, point, score: float) -> Hit:
        return Hit(point.id, point.payload["source"], point.payload["text"], score, point.payload["metadata"])

    def dense(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        if np.asarray(vector).shape[-1] != self._info["dimension"]:
            raise LmstackError(f"query vector has {np.asarray(vector).shape[-1]} dimensions, the index "
                               f"{self._info['dimension']}; search with the index's embedder")
        want = k if not where else 20 * k
        points = self.client.query_points(self.collection, query=np.asarray(vector, dtype=np.float32).tolist(),
                                          limit=want, with_payload=True).points
        hits = [self._hit(p, p.score) for p in points]
        return [h for h in hits if _matches(h.metadata, h.source, where)][:k]

    def keyword(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[Hit]:
        m = self.models
        words = [w.strip('"') for w in fts_query(query).split(" OR ") if w]
        if not words:
            return []
        condition = m.Filter(should=[m.FieldCondition(key="text", match=m.MatchText(text=w)) for w in words])
        points, _ = self.client.scroll(self.collection, scroll_filter=condition, limit=10_000, with_payload=True)
        scored = []
        for point in points:
            text = set(re.findall(r"\w+", point.payload["text"].lower()))
            scored.append(self._hit(point, float(sum(w in text for w in words))))
        scored.sort(key=lambda hit: -hit.score)
        return [h for h in scored if _matches(h.metadata, h.source, where)][:k]

    def close(self) -> None:
        self.client.close()
