"""Loaders: files on disk into `Document`s (text plus metadata), one loader per kind of file.

A folder is walked recursively; `include`/`exclude` globs match paths relative to it. A file that
cannot be read (binary, not UTF-8, an encrypted or damaged PDF, malformed JSON) is skipped with a
reason rather than stopping the run: the summary lists what was skipped and why.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmstack.errors import LmstackError
from lmstack.inputs import check_file, decode_utf8

CODE_LANGUAGES = {
    ".py": "python", ".js": "javascript", ".ts": "typescript", ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c", ".cpp": "cpp", ".hpp": "cpp", ".rb": "ruby", ".sh": "shell", ".sql": "sql",
}
TEXT_SUFFIXES = (".txt", ".rst", ".log", "")
MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
# Folders nobody wants indexed; a user's --exclude adds to these.
DEFAULT_EXCLUDES = (".git/*", "*/.git/*", "node_modules/*", "*/node_modules/*", "__pycache__/*", "*/__pycache__/*",
                    ".*")


@dataclass
class Document:
    text: str
    source: str  # the file's path
    kind: str  # text, markdown, html, pdf, json, csv, code: picks the splitter's separators
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    source: str
    reason: str


class Unreadable(Exception):
    """A file that cannot be loaded; the walk records it as skipped and goes on."""


def kind_of(path: Path) -> str | None:
    """The loader kind for a path, or None when lmstack has no loader for it."""
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix == ".pdf":
        return "pdf"
    if suffix in (".json", ".jsonl"):
        return "json"
    if suffix == ".csv":
        return "csv"
    if suffix in CODE_LANGUAGES:
        return "code"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


def load_file(path: Path) -> list[Document]:
    """The documents in one file (a PDF gives one per page, a CSV one per row); raises Unreadable."""
    kind = kind_of(path)
    if kind is None:
        raise Unreadable(f"no loader for '{path.suffix}' files")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise Unreadable(error.strerror or str(error)) from None
    if not data.strip():
        raise Unreadable("empty file")
    documents = LOADERS[kind](path, data)
    return [d for d in documents if d.text.strip()]


def _text(path: Path, data: bytes) -> str:
    try:
        return decode_utf8(data, str(path)).removeprefix("\ufeff")
    except LmstackError as error:
        raise Unreadable(str(error).removeprefix(f"{path} ")) from None


def _load_text(path: Path, data: bytes) -> list[Document]:
    return [Document(_text(path, data), str(path), "text", {"title": path.stem})]


def _load_markdown(path: Path, data: bytes) -> list[Document]:
    text = _text(path, data)
    title = next((line.lstrip("#").strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
    return [Document(text, str(path), "markdown", {"title": title})]


def _load_code(path: Path, data: bytes) -> list[Document]:
    language = CODE_LANGUAGES[path.suffix.lower()]
    return [Document(_text(path, data), str(path), "code", {"title": path.name, "language": language})]


def _load_html(path: Path, data: bytes) -> list[Document]:
    """The page's readable text: scripts, styles, navigation, headers and footers removed."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_text(path, data), "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else path.stem
    body = soup.find("main") or soup.find("article") or soup.body or soup
    lines = (line.strip() for line in body.get_text("\n").splitlines())
    text = "\n".join(line for line in lines if line)
    return [Document(text, str(path), "html", {"title": title})]


def _load_pdf(path: Path, data: bytes) -> list[Document]:
    """One document per page, with its page number (1-based) in the metadata."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unreadable("the PDF is encrypted; decrypt it first (e.g. qpdf --decrypt)")
        title = (reader.metadata.title if reader.metadata else None) or path.stem
        pages = [page.extract_text() or "" for page in reader.pages]
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as error:
        raise Unreadable(f"damaged PDF ({type(error).__name__}: {error})") from None
    documents = [Document(text, str(path), "pdf", {"title": str(title), "page": number})
                 for number, text in enumerate(pages, 1)]
    if not any(d.text.strip() for d in documents):
        raise Unreadable("the PDF has no extractable text (a scan? run OCR first)")
    return documents


def _load_json(path: Path, data: bytes) -> list[Document]:
    """JSON Lines: one document per line; JSON: one per element of a top-level list, else one."""
    text = _text(path, data)
    try:
        if path.suffix.lower() == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            parsed = json.loads(text)
            records = parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError as error:
        raise Unreadable(f"invalid JSON at line {error.lineno}: {error.msg}") from None
    return [Document(_record_text(record), str(path), "json", {"title": path.stem, "record": number})
            for number, record in enumerate(records, 1)]


def _record_text(record: Any) -> str:
    """A record's `text`/`content` field when it has one, else the whole record as readable JSON."""
    if isinstance(record, dict):
        for key in ("text", "content", "body"):
            if isinstance(record.get(key), str):
                return record[key]
    return record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, indent=1)


def _load_csv(path: Path, data: bytes) -> list[Document]:
    """One document per row, written `column: value` per line so the header travels with it."""
    try:
        rows = list(csv.DictReader(io.StringIO(_text(path, data))))
    except csv.Error as error:
        raise Unreadable(f"invalid CSV ({error})") from None
    return [Document("\n".join(f"{key}: {value}" for key, value in row.items() if key and value),
                     str(path), "csv", {"title": path.stem, "row": number})
            for number, row in enumerate(rows, 1)]


LOADERS: dict[str, Callable[[Path, bytes], list[Document]]] = {
    "text": _load_text, "markdown": _load_markdown, "html": _load_html, "pdf": _load_pdf,
    "json": _load_json, "csv": _load_csv, "code": _load_code,
}


def find_files(root: str | Path, include: list[str] | None = None, exclude: list[str] | None = None) -> list[Path]:
    """The files under `root` (or `root` itself) that the globs select, sorted.

    `include` globs (default: every kind lmstack loads) and `exclude` globs match the path
    relative to `root`, e.g. `docs/*.md`, `*.pdf`; a pattern without `/` also matches the name.
    """
    root = Path(root).expanduser()
    if root.is_file():
        check_file(root, "document")
        return [root]
    if not root.is_dir():
        raise LmstackError(f"not found: {root}; give a file or a folder to index")
    excludes = [*DEFAULT_EXCLUDES, *(exclude or [])]
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        if any(_matches(relative, pattern) for pattern in excludes):
            continue
        selected = any(_matches(relative, p) for p in include) if include else kind_of(path) is not None
        if selected:
            found.append(path)
    return found


def _matches(relative: str, pattern: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return fnmatch.fnmatch(relative, pattern) or ("/" not in pattern and fnmatch.fnmatch(name, pattern))
