"""The registry: one SQLite file that remembers every artifact lmstack made, where it came from and
how well it scored.

An artifact is a model, adapter, dataset, tokenizer or index on disk. Each row has one shape for
every stage: the operation and recipe that produced it, the datasets it read, and links to its
parents, so any model's family tree can be walked back to the pulled base model; scores measured
on it hang off the row with the dataset and settings they were measured with.

The database is `<lmstack home>/registry.db`, or the file `$LMSTACK_REGISTRY` names (tests point
it at a temporary file, so they never touch a user's registry). Several lmstack processes may write at once (a training run recording
checkpoints while an eval records scores): WAL mode plus a busy timeout make them wait their turn
instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from lmstack.errors import LmstackError
from lmstack.home import lmstack_home

# The id prefix tells a reader the kind at a glance: m-3f9a1c2b is a model.
KIND_PREFIXES = {"model": "m", "adapter": "a", "dataset": "d", "tokenizer": "t", "index": "i"}

BUSY_TIMEOUT_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    source TEXT,
    operation TEXT NOT NULL,
    recipe TEXT,
    datasets TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (path, operation)
);
CREATE TABLE IF NOT EXISTS parents (
    child TEXT NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    parent TEXT NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    PRIMARY KEY (child, parent)
);
CREATE INDEX IF NOT EXISTS parents_by_parent ON parents(parent);
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    artifact TEXT NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    dataset TEXT,
    details TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scores_by_artifact ON scores(artifact);
"""


@dataclass(frozen=True)
class Artifact:
    id: str
    kind: str
    name: str
    path: Path
    source: str | None
    operation: str
    recipe: dict | None
    metadata: dict | None
    created_at: str
    parents: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # dataset references the operation read

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class Score:
    metric: str
    value: float
    dataset: str | None
    details: dict | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def database_path() -> Path:
    override = os.environ.get("LMSTACK_REGISTRY")
    if not override:
        return lmstack_home() / "registry.db"
    try:
        Path(override).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LmstackError(f"cannot create the registry folder {Path(override).parent} ({error.strerror}); "
                           "set LMSTACK_REGISTRY to a file in a writable folder") from None
    return Path(override)


@contextlib.contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    """A short-lived connection; callers open an explicit transaction when they write."""
    path = database_path()
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as error:
        raise LmstackError(f"cannot open the registry {path} ({error}); check the folder's permissions") from None
    try:
        connection.row_factory = sqlite3.Row
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.executescript(SCHEMA)
            _migrate(connection)
        except sqlite3.DatabaseError as error:
            raise LmstackError(f"the registry {path} is damaged ({error}); move it aside (lmstack starts a new one) "
                               "or restore it from a backup") from None
        yield connection
    finally:
        connection.close()


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring a registry written by an older lmstack up to the current schema."""
    columns = {row["name"] for row in connection.execute("PRAGMA table_info(artifacts)")}
    if "datasets" not in columns:
        with contextlib.suppress(sqlite3.OperationalError):  # another process just added it
            connection.execute("ALTER TABLE artifacts ADD COLUMN datasets TEXT")


@contextlib.contextmanager
def _write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a read-then-write (the upsert in `record`)
    # cannot interleave with another process doing the same.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _to_json(value: dict | list | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _from_json(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _new_id(kind: str) -> str:
    return f"{KIND_PREFIXES[kind]}-{secrets.token_hex(4)}"


def _check_kind(kind: str) -> None:
    if kind not in KIND_PREFIXES:
        kinds = ", ".join(KIND_PREFIXES)
        raise LmstackError(f"unknown artifact kind {kind!r}; use one of: {kinds}")


def _check_parents_exist(connection: sqlite3.Connection, parent_ids: list[str]) -> None:
    for parent_id in parent_ids:
        found = connection.execute("SELECT 1 FROM artifacts WHERE id = ?", (parent_id,)).fetchone()
        if found is None:
            raise LmstackError(
                f"parent {parent_id!r} is not in the registry; see `lmstack registry list`"
            )


def record(
    kind: str,
    path: str | Path,
    *,
    name: str,
    operation: str,
    source: str | None = None,
    parents: Iterable[str | None] = (),
    recipe: dict | None = None,
    datasets: Iterable[str] = (),
    metadata: dict | None = None,
) -> str:
    """Record an artifact on disk and return its id: the one way every stage records lineage.

    `parents` are registry ids; `None` entries are skipped so a caller can pass a loaded model's
    `registry_id` without checking whether it was registered. `recipe` is the settings that made
    the artifact (what ran, not what was asked), `datasets` the dataset references it read.
    Recording the same path with the same operation again (a re-run) updates that row and keeps
    its id.
    """
    _check_kind(kind)
    absolute = str(Path(path).expanduser().resolve())
    parent_ids = list(dict.fromkeys(p for p in parents if p is not None))
    fields = (kind, name, source, _to_json(recipe), _to_json(list(datasets)), _to_json(metadata), _now())
    with _connect() as connection, _write_transaction(connection):
        _check_parents_exist(connection, parent_ids)
        row = connection.execute(
            "SELECT id FROM artifacts WHERE path = ? AND operation = ?", (absolute, operation)
        ).fetchone()
        if row is None:
            artifact_id = _new_id(kind)
            connection.execute(
                "INSERT INTO artifacts (kind, name, source, recipe, datasets, metadata, created_at, id, path,"
                " operation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*fields, artifact_id, absolute, operation),
            )
        else:
            artifact_id = row["id"]
            connection.execute(
                "UPDATE artifacts SET kind = ?, name = ?, source = ?, recipe = ?, datasets = ?, metadata = ?,"
                " created_at = ? WHERE id = ?",
                (*fields, artifact_id),
            )
            connection.execute("DELETE FROM parents WHERE child = ?", (artifact_id,))
        connection.executemany(
            "INSERT INTO parents (child, parent) VALUES (?, ?)",
            [(artifact_id, parent_id) for parent_id in parent_ids],
        )
    return artifact_id


def _artifacts(connection: sqlite3.Connection, where: str, args: tuple) -> list[Artifact]:
    rows = connection.execute(
        f"SELECT * FROM artifacts {where} ORDER BY created_at, rowid", args
    ).fetchall()
    return [_artifact_from_row(connection, row) for row in rows]


def _artifact_from_row(connection: sqlite3.Connection, row: sqlite3.Row) -> Artifact:
    parent_rows = connection.execute(
        "SELECT parent FROM parents WHERE child = ? ORDER BY rowid", (row["id"],)
    ).fetchall()
    return Artifact(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        path=Path(row["path"]),
        source=row["source"],
        operation=row["operation"],
        recipe=_from_json(row["recipe"]),
        metadata=_from_json(row["metadata"]),
        created_at=row["created_at"],
        parents=[parent["parent"] for parent in parent_rows],
        datasets=json.loads(row["datasets"]) if row["datasets"] else [],
    )


def _artifact_by_id(connection: sqlite3.Connection, artifact_id: str) -> Artifact:
    return _artifacts(connection, "WHERE id = ?", (artifact_id,))[0]


def get(artifact_id: str) -> Artifact:
    with _connect() as connection:
        found = _artifacts(connection, "WHERE id = ?", (artifact_id,))
    if not found:
        raise LmstackError(
            f"no artifact {artifact_id!r} in the registry; see `lmstack registry list` for the ids"
        )
    return found[0]


def lookup(reference: str) -> Artifact:
    """The artifact with this id, or else the latest one recorded at this path."""
    with _connect() as connection:
        found = _artifacts(connection, "WHERE id = ?", (reference,))
    if found:
        return found[0]
    at_path = find_by_path(reference) if reference.strip() else None
    if at_path is None:
        raise LmstackError(f"no artifact {reference!r} in the registry (by id or by path); "
                           "see `lmstack registry list` for the ids and paths")
    return at_path


def find_by_path(path: str | Path) -> Artifact | None:
    """The most recent artifact recorded at `path`, or None."""
    absolute = str(Path(path).expanduser().resolve())
    with _connect() as connection:
        found = _artifacts(connection, "WHERE path = ?", (absolute,))
    return found[-1] if found else None


def id_for(path: str | Path, *, kind: str = "model", name: str | None = None) -> str:
    """The registry id of the artifact at `path`, recording it as an import when it is not there yet
    (a model made outside lmstack still gets a row its scores can hang off)."""
    found = find_by_path(path)
    if found is not None:
        return found.id
    return record(kind, path, name=name or Path(path).name, operation="import")


def list_artifacts(kind: str | None = None) -> list[Artifact]:
    """All artifacts, oldest first; only those of `kind` when given."""
    if kind is not None:
        _check_kind(kind)
    with _connect() as connection:
        if kind is None:
            return _artifacts(connection, "", ())
        return _artifacts(connection, "WHERE kind = ?", (kind,))


def add_score(
    artifact_id: str,
    metric: str,
    value: float,
    *,
    dataset: str | None = None,
    details: dict | None = None,
) -> None:
    """Attach a measured score (perplexity, accuracy, win rate...) to an artifact."""
    get(artifact_id)  # a clear error for an unknown id, instead of a foreign-key failure
    with _connect() as connection, _write_transaction(connection):
        connection.execute(
            "INSERT INTO scores (artifact, metric, value, dataset, details, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (artifact_id, metric, float(value), dataset, _to_json(details), _now()),
        )


def scores(artifact_id: str) -> list[Score]:
    """The scores of one artifact, oldest first."""
    with _connect() as connection:
        rows = connection.execute(
            "SELECT * FROM scores WHERE artifact = ? ORDER BY id", (artifact_id,)
        ).fetchall()
    return [_score_from_row(row) for row in rows]


def _score_from_row(row: sqlite3.Row) -> Score:
    details = _from_json(row["details"])
    return Score(row["metric"], row["value"], row["dataset"], details, row["created_at"])


def lineage(artifact_id: str) -> list[Artifact]:
    """Every ancestor of an artifact (parents, their parents, ...), nearest first."""
    get(artifact_id)
    ancestors: list[Artifact] = []
    seen = {artifact_id}
    frontier = [artifact_id]
    with _connect() as connection:
        # Breadth-first, so nearer ancestors come first; `seen` stops at shared ancestors and
        # at the cycle a re-recorded artifact could create.
        while frontier:
            generation = [
                parent_id
                for child_id in frontier
                for parent_id in _artifact_by_id(connection, child_id).parents
                if parent_id not in seen
            ]
            frontier = list(dict.fromkeys(generation))
            seen.update(frontier)
            ancestors.extend(_artifact_by_id(connection, parent_id) for parent_id in frontier)
    return ancestors


def children(artifact_id: str) -> list[Artifact]:
    """The artifacts made directly from this one."""
    get(artifact_id)
    with _connect() as connection:
        return _artifacts(
            connection, "WHERE id IN (SELECT child FROM parents WHERE parent = ?)", (artifact_id,)
        )
