"""Reading dataset files into plain records, and writing JSONL without half-written files.

Every record remembers where it came from (`line 7` of a JSONL file, `row 3` of a CSV), so a
schema error can point the user at the exact place to fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from lmstack.errors import LmstackError
from lmstack.home import atomic_path
from lmstack.inputs import check_file, read_text

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class SourceRecords:
    """Records read from one file, each with a human-readable location inside it."""

    path: Path
    records: list[dict[str, Any]]
    locations: list[str]

    def where(self, index: int) -> str:
        """`file, line 7`: the place to name in an error about record `index` (0-based)."""
        return f"{self.path}, {self.locations[index]}"


def read_source(path: str | Path) -> SourceRecords:
    """Read a JSONL, JSON (a list of objects), CSV or Parquet file, remembering record locations.

    `path` may also be `lmstack:NAME`, a dataset shipped with lmstack.
    """
    path = check_file(dataset_path(str(path)), "dataset", suffixes=SUPPORTED_SUFFIXES)
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    records, locations = readers[path.suffix.lower()](path)
    return SourceRecords(path, records, locations)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a dataset file into a list of dict records (see `read_source`)."""
    return read_source(path).records


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSONL (UTF-8, one object per line); the file appears only when complete."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    records, locations = [], []
    # split on newlines only: JSON strings may hold U+2028, which str.splitlines would break at
    for line_number, line in enumerate(read_text(path, "dataset").split("\n"), start=1):
        if not line.strip():
            continue  # blank lines (often a trailing one) carry no record
        where = f"line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmstackError(f"{path}, {where}: invalid JSON ({e.msg}); fix or remove that line.") from None
        records.append(_require_object(record, path, where))
        locations.append(where)
    return records, locations


def _read_json(path: Path) -> tuple[list[dict], list[str]]:
    try:
        data = json.loads(read_text(path, "dataset"))
    except json.JSONDecodeError as e:
        raise LmstackError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}).") from None
    if not isinstance(data, list):
        raise LmstackError(f"{path}: a .json dataset must be a list of objects; for one object per line use .jsonl.")
    locations = [f"record {i}" for i in range(1, len(data) + 1)]
    return [_require_object(r, path, w) for r, w in zip(data, locations)], locations


def _read_csv(path: Path) -> tuple[list[dict], list[str]]:
    records = [dict(row) for row in csv.DictReader(io.StringIO(read_text(path, "dataset"), newline=""))]
    # Row 1 is the header, so the first record is row 2, the number a spreadsheet shows.
    for number, record in enumerate(records, start=2):
        if None in record:  # DictReader files the cells past the header's under the key None
            raise LmstackError(f"{path}: row {number} has more cells than the header has column names; "
                               "quote cells that contain commas, or name every column")
    return records, [f"row {i}" for i in range(2, len(records) + 2)]


def _read_parquet(path: Path) -> tuple[list[dict], list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LmstackError("Reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        records = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise LmstackError(f"{path}: cannot read Parquet file ({e}).") from None
    return records, [f"record {i}" for i in range(1, len(records) + 1)]


def _require_object(record: Any, path: Path, where: str) -> dict:
    if not isinstance(record, dict):
        raise LmstackError(f"{path}, {where}: expected a JSON object, got {type(record).__name__}.")
    return record


SHIPPED_PREFIX = "lmstack:"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")


def dataset_path(ref: str) -> Path:
    """The file a dataset reference points at."""
    if not ref or not str(ref).strip():
        raise LmstackError("no dataset given; pass a file path or lmstack:NAME (e.g. lmstack:identity_train)")
    if not ref.startswith(SHIPPED_PREFIX):
        return Path(ref).expanduser()
    folder = Path(str(resources.files("lmstack.datasets")))
    name = ref[len(SHIPPED_PREFIX):]
    shipped = {p.stem: p for p in sorted(folder.glob("*.*")) if p.suffix in DATA_SUFFIXES}
    if name not in shipped:
        names = ", ".join(SHIPPED_PREFIX + stem for stem in shipped)
        raise LmstackError(f"no shipped dataset '{ref}'; available: {names or 'none'}")
    return shipped[name]


def dataset_reference(ref: str) -> str:
    """How the registry names a dataset: `lmstack:NAME` for a shipped one, else its absolute path."""
    return ref if ref.startswith(SHIPPED_PREFIX) else str(dataset_path(ref).resolve())


def content_hash(ref: str) -> str:
    """SHA-256 of a dataset file's bytes, so a score says exactly which data it was measured on."""
    return hashlib.sha256(dataset_path(ref).read_bytes()).hexdigest()
