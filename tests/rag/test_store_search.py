"""The SQLite store and retrieval on the shipped labelled corpus: incremental indexing, deletes,
filters, refusal of a foreign embedder, and hybrid search at least as good as either half."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.rag.evaluate import read_questions
from lmstack.rag.index import build_index, open_for_query, open_index
from lmstack.rag.retrieval_metrics import ndcg, reciprocal_rank, retrieval_scores
from lmstack.rag.search import reciprocal_rank_fusion, search
from lmstack.rag.store import Hit


def test_hybrid_hit_rate_at_5_is_at_least_the_better_of_dense_and_bm25(lab_index, minilm):
    store = open_index(lab_index, minilm)
    rows = read_questions("lmstack:rag_questions")
    scores = {}
    for mode in ("dense", "bm25", "hybrid"):
        rankings = [[h.source for h in search(store, minilm, row["question"], k=5, mode=mode)] for row in rows]
        scores[mode] = retrieval_scores(rankings, [row["sources"] for row in rows], 5)
    store.close()
    assert scores["hybrid"]["hit_rate@5"] >= max(scores["dense"]["hit_rate@5"], scores["bm25"]["hit_rate@5"])
    assert scores["hybrid"]["hit_rate@5"] >= 0.9
    assert scores["hybrid"]["mrr@5"] >= max(scores["dense"]["mrr@5"], scores["bm25"]["mrr@5"]) - 0.05


def test_rrf_sums_reciprocal_ranks_with_k_60():
    a, b, c = (Hit(i, f"s{i}", f"t{i}", 0.0) for i in range(3))
    fused = reciprocal_rank_fusion([[a, b], [b, c]])
    assert [h.id for h in fused] == [1, 0, 2]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)


def test_ranking_metrics_by_hand():
    ranked = ["x/a.md", "x/b.md", "x/a.md", "x/c.md"]
    assert reciprocal_rank(ranked, ["b.md"], 5) == 0.5
    assert ndcg(ranked, ["b.md", "c.md"], 5) == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    assert retrieval_scores([ranked], [["z.md"]], 5)["hit_rate@5"] == 0.0


def test_reindex_redoes_only_changed_files_and_prunes_deleted(tmp_path, minilm):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.md", "b.md", "c.txt"):
        (folder / name).write_text(f"# {name}\n\nThe {name} document talks about topic {name}.\n")
    index = tmp_path / "i.sqlite"
    first = build_index(folder, index, embedder=minilm)
    assert len(first.added) == 3 and first.chunks_total == 3
    (folder / "a.md").write_text("# a\n\nNew text about the reactor in room Z9.\n")
    (folder / "c.txt").unlink()
    second = build_index(folder, index, embedder=minilm)
    assert second.unchanged == 1 and [p.rsplit("/", 1)[-1] for p in second.updated] == ["a.md"]
    assert [p.rsplit("/", 1)[-1] for p in second.deleted] == ["c.txt"]
    store = open_index(index)
    assert store.count() == 2
    assert "reactor" in search(store, minilm, "reactor Z9", k=1, mode="bm25")[0].text
    artifact = registry.get(second.registry_id)
    assert artifact.kind == "index" and artifact.metadata["embedder"] == "all-minilm-l6-v2"
    assert artifact.recipe["splitter"]["kind"] == "auto" and artifact.metadata["chunks"] == 2
    store.close()


def test_delete_and_metadata_filters(lab_index, minilm, tmp_path):
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(lab_index.read_bytes())
    store = open_index(copy)
    hits = search(store, minilm, "solvents", k=5, mode="hybrid", where={"source": "*waste.txt".lstrip("*")})
    assert hits == []  # a prefix filter needs the path's start
    waste = next(p for p in store.files() if p.endswith("waste.txt"))
    hits = search(store, minilm, "solvents", k=5, where={"source": waste})
    assert hits and all(h.source == waste for h in hits)
    removed = store.delete(waste)
    assert removed >= 1 and waste not in store.files()
    assert all(h.source != waste for h in search(store, minilm, "halogenated solvents green containers", k=10))
    pages = search(store, minilm, "freezer", k=10, mode="bm25", where={"row": 2})
    assert [h.metadata["row"] for h in pages] == [2]
    store.close()


def test_an_index_refuses_another_embedder(lab_index):
    with pytest.raises(LmstackError, match="built with the embedder 'all-minilm-l6-v2'"):
        open_for_query(lab_index, "model:smollm2-135m-instruct")


def test_search_json_shape_from_the_command_line(lab_index):
    from typer.testing import CliRunner

    from lmstack.cli import app

    result = CliRunner().invoke(app, ["rag", "search", str(lab_index), "Who approves flights?", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data["results"]) == 3
    assert set(data["results"][0]) == {"source", "text", "score", "metadata"}
    assert data["results"][0]["source"].endswith("travel.html")
