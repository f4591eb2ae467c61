"""SQL over a SQLite database that the agent can read and never change, and text-to-SQL.

Three guards, any one of which stops a write: the file is opened read-only (`mode=ro`), the
connection is `query_only`, and an authorizer allows only reading (SELECT, reading columns,
calling functions). Before any of them, `check_query` refuses anything but one SELECT/WITH
statement with a message saying so.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from lmstack.errors import LmstackError
from lmstack.inputs import check_file

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_SQLITE_RECURSIVE = 33  # a WITH RECURSIVE step (not exported by every Python's sqlite3)


def _authorize(action: int, *_args) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS or action == _SQLITE_RECURSIVE else sqlite3.SQLITE_DENY


def open_read_only(path: str | Path) -> sqlite3.Connection:
    """A connection that cannot change the database, whatever SQL it is given."""
    path = check_file(path, "database")
    with open(path, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise LmstackError(f"{path} is not a SQLite database")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    connection.set_authorizer(_authorize)
    return connection


def check_query(sql: str) -> str:
    """One read-only statement (SELECT or WITH ... SELECT), trailing semicolon allowed."""
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        raise LmstackError("the SQL query is empty")
    if ";" in _without_strings(statement):
        raise LmstackError("only one SQL statement at a time (a single SELECT); remove the extra ';'")
    first = statement.split(None, 1)[0].upper()
    if first not in ("SELECT", "WITH"):
        raise LmstackError(f"only SELECT queries may run (this one starts with {first}); the database is read-only")
    return statement


def _without_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", sql)


def run_query(connection: sqlite3.Connection, sql: str, max_rows: int = 50) -> tuple[list[str], list[tuple]]:
    """(column names, up to `max_rows` rows); a refused or failing query is a clear error."""
    statement = check_query(sql)
    try:
        cursor = connection.execute(statement)
        return [d[0] for d in cursor.description or []], cursor.fetchmany(max_rows)
    except sqlite3.DatabaseError as error:
        if "not authorized" in str(error) or "readonly" in str(error):
            raise LmstackError("the query tried to change the database or read something not allowed; "
                               "only SELECT queries run") from None
        raise LmstackError(f"SQL error: {error}") from None


def schema(connection: sqlite3.Connection) -> str:
    """The CREATE statements of the tables and views: what a text-to-SQL prompt shows the model."""
    connection.set_authorizer(None)
    try:
        rows = connection.execute("SELECT sql FROM sqlite_master WHERE type IN ('table', 'view') AND sql IS NOT NULL"
                                  " AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    finally:
        connection.set_authorizer(_authorize)
    return "\n".join(row[0].strip() + ";" for row in rows)


def format_rows(columns: list[str], rows: list[tuple]) -> str:
    if not rows:
        return "(no rows)"
    lines = [" | ".join(columns)] + [" | ".join("NULL" if v is None else str(v) for v in row) for row in rows]
    return "\n".join(lines)


def text_to_sql_prompt(question: str, schema_text: str) -> str:
    return (f"SQLite database schema:\n{schema_text}\n\nWrite one SQLite SELECT query that answers the question. "
            f"Reply with the SQL only.\nQuestion: {question}\nSQL:")


def extract_sql(reply: str) -> str:
    """The SQL in a model's reply (inside a ``` block if there is one), up to its first ';'."""
    fenced = re.search(r"```(?:sql)?\s*(.*?)```", reply, re.S | re.I)
    text = fenced.group(1) if fenced else reply
    match = re.search(r"\b(SELECT|WITH)\b.*", text, re.S | re.I)
    sql = match.group(0) if match else text
    return sql.split(";")[0].strip()


def text_to_sql(llm, question: str, database: str | Path, max_rows: int = 50) -> dict:
    """Ask the model for SQL (schema in the prompt), then run it read-only."""
    connection = open_read_only(database)
    try:
        reply = llm.complete([text_to_sql_prompt(question, schema(connection))], max_new_tokens=160)[0]
        sql = extract_sql(reply)
        columns, rows = run_query(connection, sql, max_rows)
    finally:
        connection.close()
    return {"sql": sql, "columns": columns, "rows": [list(row) for row in rows]}
