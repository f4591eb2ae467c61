"""Hostile input for `lmstack rag` and `lmstack agent`: every bad input is a one-line refusal (or a
skipped file named in the summary), and the user's files and indexes are left as they were."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from harness import fresh_home, refused, run, untouched, usage_error


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """A small index built once through the command line (in a home of its own)."""
    root = tmp_path_factory.mktemp("hostile-rag")
    docs = root / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Freezers\n\nThe freezer F1 is in room B10.\n")
    path = root / "docs.sqlite"
    result = run(["rag", "index", str(docs), "--index", str(path)], home=fresh_home(root / "home"))
    assert result.returncode == 0, result.stderr.decode()
    return path


def test_index_missing_path(home, tmp_path):
    refused(run(["rag", "index", str(tmp_path / "nope"), "--index", "x"], home=home), "not found")


def test_index_empty_folder(home, tmp_path):
    (tmp_path / "empty").mkdir()
    refused(run(["rag", "index", str(tmp_path / "empty"), "--index", "x"], home=home), "no files to index")


def test_index_folder_of_unsupported_files(home, tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(b"\x89PNG\r\n")
    refused(run(["rag", "index", str(tmp_path / "pics"), "--index", "x"], home=home), "no files to index")


def test_index_chunk_size_out_of_range(home, tmp_path):
    usage_error(run(["rag", "index", str(tmp_path), "--index", "x", "--chunk-size", "5"], home=home), "--chunk-size")


def test_index_overlap_larger_than_half_the_chunk(home, tmp_path):
    refused(run(["rag", "index", str(tmp_path), "--index", "x", "--chunk-size", "100", "--chunk-overlap", "80"],
                home=home), "overlap")


def test_index_into_a_file_that_is_not_an_index(home, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("some text")
    precious = tmp_path / "notes.sqlite"
    precious.write_text("my notes, not a database")
    with untouched(precious):
        refused(run(["rag", "index", str(tmp_path / "docs"), "--index", str(precious)], home=home),
                "not an lmstack index")


def test_index_into_a_folder(home, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("some text")
    (tmp_path / "out.sqlite").mkdir()
    refused(run(["rag", "index", str(tmp_path / "docs"), "--index", str(tmp_path / "out.sqlite")], home=home),
            "is a folder")


def test_bad_files_are_skipped_and_reported_while_the_rest_is_indexed(home, tmp_path):
    from pdfs_for_hostile import write_bad_pdfs

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThe autoclave is in room B16.\n")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02\x03 binary")
    (docs / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (docs / "bad.json").write_text("{not json")
    write_bad_pdfs(docs)
    with untouched(docs):
        result = run(["rag", "index", str(docs), "--index", str(tmp_path / "i.sqlite"), "--json"], home=home)
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    reasons = {Path(s["source"]).name: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"binary.txt", "latin1.txt", "bad.json", "locked.pdf", "broken.pdf"}
    assert "encrypted" in reasons["locked.pdf"] and "binary" in reasons["binary.txt"]
    assert [Path(p).name for p in summary["added"]] == ["good.md"] and summary["chunks_total"] == 1


def test_search_missing_index(home, tmp_path):
    refused(run(["rag", "search", str(tmp_path / "none.sqlite"), "query"], home=home), "no index at")


def test_search_with_another_embedder_is_refused(home, index):
    with untouched(index):
        refused(run(["rag", "search", str(index), "freezer", "--embedder", "model:smollm2-135m-instruct"], home=home),
                "built with the embedder")


def test_search_k_out_of_range(home, index):
    usage_error(run(["rag", "search", str(index), "freezer", "-k", "0"], home=home), "-k")


def test_search_unknown_mode(home, index):
    refused(run(["rag", "search", str(index), "freezer", "--mode", "psychic"], home=home), "unknown search mode")


def test_search_empty_query(home, index):
    refused(run(["rag", "search", str(index), "   ", "--mode", "bm25"], home=home), "query is empty")


def test_ask_similarity_out_of_range(home, index):
    usage_error(run(["rag", "ask", str(index), "q?", "--min-similarity", "5"], home=home), "--min-similarity")


def test_eval_binary_questions_file(home, index, tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_bytes(b"\x00\x00binary")
    refused(run(["rag", "eval", str(index), str(bad), "--retrieval-only"], home=home), "binary")


def test_eval_questions_with_a_broken_line(home, index, tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "where?", "answer": "B10", "sources": ["a.md"]}\n{broken\n')
    refused(run(["rag", "eval", str(index), str(bad), "--retrieval-only"], home=home), "line 2", "invalid JSON")


def test_delete_a_path_that_is_not_indexed(home, index):
    with untouched(index):
        refused(run(["rag", "delete", str(index), "/no/such/file.md"], home=home), "not in the index")


@pytest.fixture
def database(tmp_path) -> Path:
    path = tmp_path / "shop.db"
    connection = sqlite3.connect(path)
    connection.executescript("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
    connection.commit()
    connection.close()
    return path


@pytest.mark.parametrize("statement", ["DELETE FROM t", "DROP TABLE t", "SELECT 1; DELETE FROM t",
                                       "INSERT INTO t VALUES (3)"])
def test_sql_that_writes_is_refused(home, database, statement):
    with untouched(database):
        refused(run(["agent", "sql", str(database), statement, "--raw"], home=home), "SELECT")


def test_sql_on_a_file_that_is_not_a_database(home, tmp_path):
    fake = tmp_path / "fake.db"
    fake.write_text("hello")
    refused(run(["agent", "sql", str(fake), "SELECT 1", "--raw"], home=home), "not a SQLite database")


def test_agent_unknown_tool(home):
    refused(run(["agent", "run", "2+2?", "--tools", "rocket"], home=home), "unknown tool")


def test_agent_sql_tool_without_database(home):
    refused(run(["agent", "run", "count rows", "--tools", "sql"], home=home), "--db")


def test_agent_max_steps_out_of_range(home):
    usage_error(run(["agent", "run", "2+2?", "--max-steps", "0"], home=home), "--max-steps")


def test_optimize_refuses_to_overwrite_its_output(home, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"input": "a", "output": "A"}\n')
    out = tmp_path / "program.json"
    out.write_text("keep me")
    with untouched(out):
        refused(run(["agent", "optimize", str(rows), str(rows), "-i", "Do it.", "--out", str(out)], home=home),
                "--overwrite")
