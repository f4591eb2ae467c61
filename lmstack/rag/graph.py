"""Knowledge-graph RAG: (subject, relation, object) triples extracted by the LLM from each chunk,
stored in the index file beside the chunks, and retrieved by graph neighbourhood.

A question's entities are the graph nodes whose names appear in it; the facts within `hops`
edges of them, and the chunks those facts came from, join the vector and keyword results.
Graph edges connect passages that share an entity even when they share no words with the
question (a two-step question: "who is responsible for the freezer holding the antibodies?").
"""

from __future__ import annotations

import re
from typing import Any

from lmstack.errors import LmstackError
from lmstack.hub.llm import LLM
from lmstack.rag.store import Hit, SqliteStore

EXTRACT_PROMPT = ("Extract the facts in the text as lines of the form: subject | relation | object\n"
                  "Write one fact per line and nothing else.\n\nText:\n{text}\n\nFacts:")


def _require_sqlite(store: Any) -> SqliteStore:
    if not isinstance(store, SqliteStore):
        raise LmstackError("knowledge graphs are stored in SQLite indexes; build the index with the default store")
    store.connection.execute("CREATE TABLE IF NOT EXISTS triples (subject TEXT NOT NULL, relation TEXT NOT NULL,"
                             " object TEXT NOT NULL, chunk INTEGER NOT NULL)")
    return store


def parse_triples(reply: str) -> list[tuple[str, str, str]]:
    """The `a | b | c` lines of a reply (extra text around them is ignored)."""
    triples = []
    for line in reply.splitlines():
        parts = [part.strip(" -*.\t\"'") for part in line.split("|")]
        if len(parts) == 3 and all(parts) and all(len(part) <= 200 for part in parts):
            triples.append((parts[0], parts[1], parts[2]))
    return triples


def build_graph(store: Any, llm: LLM, *, max_chunks: int | None = None, batch_size: int = 4) -> dict[str, int]:
    """Extract triples from every chunk (replacing an earlier graph); counts of what happened."""
    store = _require_sqlite(store)
    ids = [row[0] for row in store.connection.execute("SELECT id FROM chunks ORDER BY id")][:max_chunks]
    chunks = store.chunks(ids)
    rows: list[tuple[str, str, str, int]] = []
    failures = 0
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        replies = llm.complete([EXTRACT_PROMPT.format(text=chunks[i][1]) for i in batch], max_new_tokens=160)
        for chunk_id, reply in zip(batch, replies):
            triples = parse_triples(reply)
            failures += not triples
            rows += [(*triple, chunk_id) for triple in triples]
    with store.transaction():
        store.connection.execute("DELETE FROM triples")
        store.connection.executemany("INSERT INTO triples VALUES (?, ?, ?, ?)", rows)
    return {"chunks_read": len(ids), "triples": len(rows), "parse_failures": failures}


def add_triples(store: Any, triples: list[tuple[str, str, str, int]]) -> None:
    store = _require_sqlite(store)
    with store.transaction():
        store.connection.executemany("INSERT INTO triples VALUES (?, ?, ?, ?)", triples)


def neighbourhood(store: Any, question: str, *, hops: int = 1, limit: int = 20) -> list[tuple[str, str, str, int]]:
    """Facts within `hops` edges of the entities named in the question, nearest first."""
    store = _require_sqlite(store)
    words = set(re.findall(r"\w+", question.lower()))
    nodes = {name for (name,) in store.connection.execute("SELECT subject FROM triples UNION SELECT object FROM triples")}
    frontier = {node for node in nodes if _named_in(node, words)}
    seen_nodes, facts, seen_facts = set(frontier), [], set()
    for _ in range(hops + 1):
        if not frontier:
            break
        marks = ",".join("?" * len(frontier))
        found = store.connection.execute(
            f"SELECT subject, relation, object, chunk FROM triples WHERE subject IN ({marks}) OR object IN ({marks})",
            [*frontier, *frontier]).fetchall()
        for fact in found:
            if fact not in seen_facts:
                seen_facts.add(fact)
                facts.append(tuple(fact))
        frontier = {n for s, _, o, _ in found for n in (s, o)} - seen_nodes
        seen_nodes |= frontier
    return facts[:limit]


def _named_in(node: str, words: set[str]) -> bool:
    """A node is named when all its words (ignoring very short ones) are in the question."""
    node_words = [w for w in re.findall(r"\w+", node.lower()) if len(w) > 2]
    return bool(node_words) and all(w in words for w in node_words)


def graph_hits(store: Any, question: str, k: int) -> list[Hit]:
    """The chunks behind the question's neighbourhood facts, in the order the facts were found."""
    facts = neighbourhood(store, question)
    order = list(dict.fromkeys(chunk for *_, chunk in facts))[:k]
    chunks = store.chunks(order)
    return [Hit(i, chunks[i][0], chunks[i][1], 1.0 / rank, chunks[i][2]) for rank, i in enumerate(order, 1) if i in chunks]
