"""Splitters: documents into chunks small enough to embed and to fit many into a prompt.

- `recursive`: split on the coarsest separator that the document type offers (sections, then
  paragraphs, lines, sentences, words), recursing into pieces that are still too long, and merge
  neighbours back up to `chunk_size` characters with `chunk_overlap` characters repeated.
- `markdown`: cut at headers first, so a chunk never straddles two sections; the header path
  goes into the chunk's metadata (`headers`) and the section is then split recursively.
- `tokens`: windows of `chunk_size` tokens of a tokenizer, overlapping by `chunk_overlap` tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from lmstack.errors import LmstackError
from lmstack.rag.loaders import Document

# Coarse to fine; "" splits between characters (the last resort for a long unbroken string).
SEPARATORS: dict[str, list[str]] = {
    "markdown": ["\n# ", "\n## ", "\n### ", "\n#### ", "\n```\n", "\n\n", "\n", ". ", " ", ""],
    "code": ["\nclass ", "\ndef ", "\nfunc ", "\nfn ", "\nfunction ", "\n    def ", "\n\n", "\n", " ", ""],
    "html": ["\n\n", "\n", ". ", " ", ""],
    "text": ["\n\n", "\n", ". ", " ", ""],
}
SPLITTERS = ("auto", "recursive", "markdown", "tokens")


@dataclass
class Chunk:
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitterConfig:
    kind: str = "auto"  # auto: markdown-aware for Markdown, recursive for everything else
    chunk_size: int = 800  # characters (tokens for `tokens`)
    chunk_overlap: int = 100

    def __post_init__(self) -> None:
        if self.kind not in SPLITTERS:
            raise LmstackError(f"unknown splitter {self.kind!r}; use one of {', '.join(SPLITTERS)}")
        if not 16 <= self.chunk_size <= 100_000:
            raise LmstackError(f"chunk size must be in [16, 100000], got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size // 2 + 1:
            raise LmstackError(f"chunk overlap must be in [0, chunk size / 2], got {self.chunk_overlap}")


def split_documents(documents: list[Document], config: SplitterConfig,
                    count_tokens: Callable[[str], list[tuple[int, int]]] | None = None) -> list[Chunk]:
    """Every document's chunks, in order, numbered per source in `metadata["chunk"]`.

    `count_tokens` (text -> token character spans) is needed by the `tokens` splitter.
    """
    chunks: list[Chunk] = []
    for document in documents:
        if config.kind == "tokens":
            if count_tokens is None:
                raise LmstackError("the tokens splitter needs a tokenizer")
            pieces = [(text, {}) for text in split_tokens(document.text, count_tokens, config.chunk_size,
                                                          config.chunk_overlap)]
        elif config.kind == "markdown" or (config.kind == "auto" and document.kind == "markdown"):
            pieces = split_markdown(document.text, config.chunk_size, config.chunk_overlap)
        else:
            separators = SEPARATORS.get(document.kind, SEPARATORS["text"])
            pieces = [(text, {}) for text in split_recursive(document.text, config.chunk_size,
                                                             config.chunk_overlap, separators)]
        chunks += [Chunk(text, document.source, {**document.metadata, **extra})
                   for text, extra in pieces if text.strip()]
    numbers: dict[str, int] = {}
    for chunk in chunks:
        chunk.metadata["chunk"] = numbers[chunk.source] = numbers.get(chunk.source, -1) + 1
    return chunks


def split_recursive(text: str, size: int, overlap: int, separators: list[str]) -> list[str]:
    """Pieces of at most `size` characters, cut at the coarsest separator that works."""
    pieces = _split_into_small_pieces(text, size, separators)
    return _merge(pieces, size, overlap)


def _split_into_small_pieces(text: str, size: int, separators: list[str]) -> list[str]:
    if len(text) <= size:
        return [text]
    separator = next((s for s in separators if s == "" or s in text), "")
    if separator == "":
        return [text[i : i + size] for i in range(0, len(text), size)]
    finer = separators[separators.index(separator) + 1 :]
    parts = text.split(separator)
    # Keep the separator with the piece that follows it (a header stays with its section).
    pieces = [parts[0]] + [separator + part for part in parts[1:]]
    return [small for piece in pieces if piece for small in _split_into_small_pieces(piece, size, finer)]


def _merge(pieces: list[str], size: int, overlap: int) -> list[str]:
    """Join neighbouring pieces up to `size`; each chunk starts with up to `overlap` characters of
    the end of the previous one (whole pieces, so words are not cut)."""
    chunks: list[str] = []
    current: list[str] = []
    for piece in pieces:
        if current and sum(map(len, current)) + len(piece) > size:
            chunks.append("".join(current).strip())
            while current and (sum(map(len, current)) > overlap or sum(map(len, current)) + len(piece) > size):
                current.pop(0)
        current.append(piece)
    if current:
        chunks.append("".join(current).strip())
    return [chunk for chunk in chunks if chunk]


_HEADER = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def split_markdown(text: str, size: int, overlap: int) -> list[tuple[str, dict[str, Any]]]:
    """(chunk, {"headers": "Top > Section > Sub"}) for each piece of each section."""
    sections: list[tuple[list[str], list[str]]] = []  # (header path, lines)
    path: list[str] = []
    lines: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADER.match(line)
        if match:
            if _has_body(lines):
                sections.append((list(path), lines))
            level = len(match.group(1))
            path = path[: level - 1] + [""] * max(0, level - 1 - len(path)) + [match.group(2)]
            lines = [line]
        else:
            lines.append(line)
    if _has_body(lines):
        sections.append((path, lines))
    result = []
    for headers, body in sections:
        meta = {"headers": " > ".join(h for h in headers if h)} if any(headers) else {}
        for piece in split_recursive("\n".join(body), size, overlap, SEPARATORS["markdown"][4:]):
            result.append((piece, meta))
    return result


def _has_body(lines: list[str]) -> bool:
    """Whether a section has text besides its header (a header alone is no chunk)."""
    return any(line.strip() and not _HEADER.match(line) for line in lines)


def split_tokens(text: str, spans_of: Callable[[str], list[tuple[int, int]]], size: int, overlap: int) -> list[str]:
    """Windows of `size` tokens stepping by `size - overlap`, cut from the text at token boundaries."""
    spans = [span for span in spans_of(text) if span[1] > span[0]]
    step = size - overlap
    windows = []
    for start in range(0, max(len(spans) - overlap, 1), step):
        window = spans[start : start + size]
        if window:
            windows.append(text[window[0][0] : window[-1][1]])
    return windows
