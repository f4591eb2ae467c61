"""RAG speed, side by side in one run (ratios are what to compare; the machine is shared).

1. Indexing throughput (chunks/s): lmstack's pipeline (load, split, embed with our encoder, store
   in SQLite) against LangChain's splitter + the same MiniLM run by sentence-transformers, on the
   same files (the shipped corpus copied `--copies` times). Skipped when the peer is not installed.
2. Vector search at N chunks (synthetic clustered unit vectors, 384-d): latency per query and
   recall@10 against exact search, for our SQLite store (sqlite-vec, exact), FAISS flat (exact),
   FAISS HNSW and Chroma (HNSW).

    python bench/rag_speed.py --sizes 10000 100000 --queries 100
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 1000 centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(search, queries: np.ndarray) -> tuple[float, list[list[int]]]:
    started = time.perf_counter()
    results = [search(q) for q in queries]
    return (time.perf_counter() - started) / len(queries) * 1000, results


def recall(found: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(e)) / 10 for f, e in zip(found, exact)]))


def bench_search(n: int, queries: int, dim: int = 384) -> list[tuple[str, float, float]]:
    from lmstack.rag.splitters import Chunk
    from lmstack.rag.store import FileRecord, SqliteStore

    x = clustered_vectors(n, dim, 0)
    q = clustered_vectors(queries, dim, 1)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    rows = []
    folder = Path(tempfile.mkdtemp())
    store = SqliteStore(folder / "bench.sqlite", create={"embedder": "bench", "dimension": dim})
    chunks = [Chunk(f"chunk {i}", "bench", {}) for i in range(n)]
    store.add(FileRecord("bench", "-", n), chunks, x)
    ms, found = timed(lambda v: [h.id - 1 for h in store.dense(v, 10)], q)
    rows.append(("lmstack SqliteStore (sqlite-vec, exact)", ms, recall(found, exact)))
    store.close()
    shutil.rmtree(folder, ignore_errors=True)
    try:
        import faiss

        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        ms, found = timed(lambda v: flat.search(v[None], 10)[1][0].tolist(), q)
        rows.append(("FAISS IndexFlatIP (exact)", ms, recall(found, exact)))
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction, hnsw.hnsw.efSearch = 64, 64
        hnsw.add(x)
        ms, found = timed(lambda v: hnsw.search(v[None], 10)[1][0].tolist(), q)
        rows.append(("FAISS HNSW (M=32, ef=64)", ms, recall(found, exact)))
    except ImportError:
        print("faiss-cpu not installed: skipped")
    try:
        import chromadb

        client = chromadb.EphemeralClient()
        collection = client.create_collection(f"bench{n}", metadata={"hnsw:space": "ip"})
        for start in range(0, n, 5000):
            collection.add(ids=[str(i) for i in range(start, min(n, start + 5000))], embeddings=x[start : start + 5000])
        ms, found = timed(lambda v: [int(i) for i in collection.query(query_embeddings=[v], n_results=10)["ids"][0]], q)
        rows.append(("Chroma (HNSW)", ms, recall(found, exact)))
    except ImportError:
        print("chromadb not installed: skipped")
    return rows


def bench_indexing(copies: int) -> list[tuple[str, float]]:
    from lmstack.rag.embeddings import MiniLM, minilm_dir
    from lmstack.rag.evaluate import shipped_corpus
    from lmstack.rag.index import build_index

    folder = Path(tempfile.mkdtemp())
    for copy in range(copies):
        shutil.copytree(shipped_corpus(), folder / f"copy{copy}")
        for path in (folder / f"copy{copy}").iterdir():  # distinct text, so no cache hits
            path.write_text(path.read_text() + f"\ncopy {copy}\n")
    embedder = MiniLM()
    rows = []
    started = time.perf_counter()
    summary = build_index(folder, folder / "lmstack.sqlite", embedder=embedder)
    rows.append(("lmstack rag index", summary.chunks_total / (time.perf_counter() - started)))
    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(minilm_dir()), device="cpu")
        splitter = RecursiveCharacterTextSplitter(chunk_size=800, chunk_overlap=100)
        started = time.perf_counter()
        texts = [piece for path in sorted(folder.rglob("*")) if path.is_file() and path.suffix != ".sqlite"
                 for piece in splitter.split_text(path.read_text(errors="replace"))]
        model.encode(texts, batch_size=32, normalize_embeddings=True)
        rows.append(("LangChain splitter + sentence-transformers (no store)", len(texts) / (time.perf_counter() - started)))
    except ImportError:
        print("langchain-text-splitters / sentence-transformers not installed: skipped")
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--copies", type=int, default=20, help="copies of the shipped corpus to index")
    args = parser.parse_args()
    print("| indexing | chunks/s | ratio to lmstack |\n|---|---|---|")
    rows = bench_indexing(args.copies)
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / rows[0][1]:.2f} |")
    for n in args.sizes:
        print(f"\n| search at {n} chunks | ms/query | recall@10 | latency vs FAISS HNSW |\n|---|---|---|---|")
        rows = bench_search(n, args.queries)
        hnsw = next((ms for name, ms, _ in rows if name.startswith("FAISS HNSW")), None)
        for name, ms, r in rows:
            ratio = f"{ms / hnsw:.1f}x" if hnsw else "-"
            print(f"| {name} | {ms:.2f} | {r:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
