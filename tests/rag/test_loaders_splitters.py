"""Loaders keep text and metadata and skip what they cannot read; splitters respect sizes and structure."""

from __future__ import annotations

import json

import pytest

from lmstack.errors import LmstackError
from lmstack.rag.loaders import Unreadable, find_files, load_file
from lmstack.rag.splitters import SplitterConfig, split_documents, split_markdown, split_recursive, split_tokens
from pdfs import write_encrypted_pdf, write_pdf


def test_pdf_pages_become_documents_with_page_numbers(tmp_path):
    pdf = write_pdf(tmp_path / "a.pdf", ["The freezer F1 is in room B10.", "Sharps bins are yellow."])
    documents = load_file(pdf)
    assert [d.metadata["page"] for d in documents] == [1, 2]
    assert "freezer F1" in documents[0].text and "yellow" in documents[1].text


def test_encrypted_damaged_and_binary_files_are_unreadable(tmp_path):
    plain = write_pdf(tmp_path / "plain.pdf", ["hello"])
    with pytest.raises(Unreadable, match="encrypted"):
        load_file(write_encrypted_pdf(tmp_path / "locked.pdf", plain))
    (tmp_path / "broken.pdf").write_bytes(plain.read_bytes()[:60])
    with pytest.raises(Unreadable):
        load_file(tmp_path / "broken.pdf")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(Unreadable, match="binary"):
        load_file(tmp_path / "blob.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(Unreadable, match="UTF-8"):
        load_file(tmp_path / "latin.txt")


def test_html_loses_boilerplate_and_keeps_title(corpus):
    [page] = load_file(corpus / "travel.html")
    assert page.metadata["title"] == "Travel and conference funding"
    assert "1,500 euros" in page.text
    for boilerplate in ("analytics", "Cookie settings", "People", "font-family"):
        assert boilerplate not in page.text


def test_json_csv_and_code_loaders(corpus, tmp_path):
    seminars = load_file(corpus / "seminars.json")
    assert len(seminars) == 3 and seminars[1].text.startswith("Journal club")
    rows = load_file(corpus / "freezers.csv")
    assert rows[1].text.splitlines()[0] == "freezer: F2" and rows[1].metadata["row"] == 2
    (tmp_path / "r.jsonl").write_text(json.dumps({"id": 1, "body": "alpha"}) + "\n" + json.dumps({"x": 2}) + "\n")
    records = load_file(tmp_path / "r.jsonl")
    assert records[0].text == "alpha" and '"x": 2' in records[1].text
    [code] = load_file(corpus / "analysis_tools.py")
    assert code.kind == "code" and code.metadata["language"] == "python"


def test_walk_with_globs_and_default_excludes(tmp_path):
    for name in ("a.md", "b.txt", "sub/c.md", ".git/config.txt", "sub/image.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text")
    names = lambda paths: sorted(p.relative_to(tmp_path).as_posix() for p in paths)  # noqa: E731
    assert names(find_files(tmp_path)) == ["a.md", "b.txt", "sub/c.md"]
    assert names(find_files(tmp_path, include=["*.md"])) == ["a.md", "sub/c.md"]
    assert names(find_files(tmp_path, exclude=["sub/*"])) == ["a.md", "b.txt"]
    with pytest.raises(LmstackError, match="not found"):
        find_files(tmp_path / "missing")


def test_recursive_splitter_respects_size_and_overlaps():
    text = " ".join(f"word{i}." for i in range(400))
    chunks = split_recursive(text, 200, 40, ["\n\n", "\n", ". ", " ", ""])
    assert all(len(c) <= 200 for c in chunks) and len(chunks) > 5
    assert chunks[0][-20:].split()[-1] in chunks[1]  # the end of one chunk starts the next
    assert "".join(text.split()) in "".join("".join(chunks).split()) or all(w in " ".join(chunks) for w in text.split())


def test_markdown_splitter_puts_header_paths_in_metadata(corpus):
    text = (corpus / "equipment-booking.md").read_text()
    pieces = split_markdown(text, 2000, 0)
    headers = [meta["headers"] for _, meta in pieces]
    assert headers == ["Booking shared equipment > The booking system", "Booking shared equipment > The confocal microscope",
                       "Booking shared equipment > The mass spectrometer"]
    assert pieces[1][0].startswith("## The confocal microscope")


def test_token_splitter_windows_overlap_by_tokens(minilm):
    text = " ".join(f"token{i}" for i in range(300))
    windows = split_tokens(text, minilm.token_spans, 64, 16)
    sizes = [len(minilm.token_spans(w)) for w in windows]
    assert max(sizes) <= 64 and len(windows) >= 4
    assert windows[1].split()[0] in windows[0]


def test_split_documents_numbers_chunks_per_source(corpus):
    documents = load_file(corpus / "lab-safety.md") + load_file(corpus / "waste.txt")
    chunks = split_documents(documents, SplitterConfig(chunk_size=300, chunk_overlap=30))
    by_source = {}
    for chunk in chunks:
        by_source.setdefault(chunk.source, []).append(chunk.metadata["chunk"])
    assert all(numbers == list(range(len(numbers))) for numbers in by_source.values())
    with pytest.raises(LmstackError, match="overlap"):
        SplitterConfig(chunk_size=100, chunk_overlap=90)
