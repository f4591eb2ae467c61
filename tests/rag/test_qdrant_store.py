"""The second store backend, Qdrant, in its local mode (the API a Qdrant server or cluster serves):
the same indexing, incremental updates, deletes and searches as the SQLite store."""

from __future__ import annotations

import pytest

pytest.importorskip("qdrant_client")

from lmstack.errors import LmstackError  # noqa: E402
from lmstack.rag.index import build_index, open_for_query, open_index  # noqa: E402
from lmstack.rag.search import search  # noqa: E402


def test_qdrant_index_search_reindex_and_delete(corpus, minilm, lab_index, tmp_path):
    index = f"qdrant:{tmp_path / 'qdrant'}#lab"
    first = build_index(corpus, index, embedder=minilm)
    assert first.chunks_total > 10 and not first.skipped
    again = build_index(corpus, index, embedder=minilm)
    assert again.unchanged == first.files_seen and again.chunks_embedded == 0
    store = open_index(index)
    for mode in ("dense", "bm25", "hybrid"):
        top = search(store, minilm, "Which flights need approval from the lab director?", k=3, mode=mode)
        assert any(h.source.endswith("travel.html") for h in top), (mode, [h.source for h in top])
    sqlite = open_index(lab_index)
    question = "Where are flammable solvents kept?"
    same = [(h.source, h.text) for h in search(sqlite, minilm, question, k=5, mode="dense")]
    assert [(h.source, h.text) for h in search(store, minilm, question, k=5, mode="dense")] == same
    sqlite.close()
    travel = next(path for path in store.files() if path.endswith("travel.html"))
    assert store.delete(travel) == 1 and travel not in store.files()
    assert all(not h.source.endswith("travel.html") for h in search(store, minilm, "flight approval", k=10))
    store.close()
    with pytest.raises(LmstackError, match="built with the embedder"):
        open_for_query(index, "model:other")
