"""Tools an agent may call: each has a name, a description and a JSON schema for its arguments.

The agent's arguments are validated against the schema (`jsonschema`) before the tool runs; an
invalid call becomes an observation telling the model what was wrong, so it can retry.

- calculator: arithmetic parsed into a syntax tree and evaluated node by node (numbers,
  + - * / // % **, math functions); nothing is `eval`ed.
- search: hybrid retrieval over an lmstack index.
- sql: one read-only SELECT over a SQLite database (the schema is in the tool's description).
- python: code run in the sandbox (`lmstack/sandbox.py`); what it prints is the observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from lmstack.arithmetic import calculate
from lmstack.errors import LmstackError


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    run: Callable[[dict[str, Any]], str]

    def call(self, arguments: Any) -> str:
        """Validate the arguments against the schema, then run; a bad call raises LmstackError."""
        import jsonschema

        try:
            jsonschema.validate(arguments, self.parameters)
        except jsonschema.ValidationError as error:
            where = "/".join(map(str, error.absolute_path)) or "arguments"
            raise LmstackError(f"invalid arguments for {self.name} ({where}: {error.message})") from None
        return self.run(arguments)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


# --- calculator ----------------------------------------------------------------------------------

def calculator_tool() -> Tool:
    return Tool("calculator", "Evaluate an arithmetic expression, e.g. 17 * (3 + 4) or sqrt(2).",
                _object({"expression": {"type": "string"}}, ["expression"]),
                lambda args: str(calculate(args["expression"])))


# --- the others ----------------------------------------------------------------------------------


def search_tool(index: str, k: int = 3) -> Tool:
    from lmstack.rag.index import open_for_query
    from lmstack.rag.search import search

    store, embedder = open_for_query(index)

    def run(args: dict[str, Any]) -> str:
        hits = search(store, embedder, args["query"], k=k, mode="hybrid")
        return "\n\n".join(f"[{n}] ({hit.source.rsplit('/', 1)[-1]}) {hit.text}" for n, hit in enumerate(hits, 1)) \
            or "(nothing found)"

    return Tool("search", "Search the document index for passages about a topic.",
                _object({"query": {"type": "string", "minLength": 1}}, ["query"]), run)


def sql_tool(database: str) -> Tool:
    from lmstack.agents.sql import format_rows, open_read_only, run_query, schema

    connection = open_read_only(database)
    return Tool("sql", "Run one read-only SQLite SELECT query. The database schema:\n" + schema(connection),
                _object({"query": {"type": "string", "minLength": 1}}, ["query"]),
                lambda args: format_rows(*run_query(connection, args["query"])))


def python_tool(timeout: float = 10.0, memory_mb: int = 512) -> Tool:
    from lmstack.sandbox import run_python

    return Tool("python", "Run Python code (standard library only, no network, no files outside a temporary "
                "folder) and see what it prints. Use print() for results.",
                _object({"code": {"type": "string", "minLength": 1}}, ["code"]),
                lambda args: run_python(args["code"], timeout=timeout, memory_mb=memory_mb).report())


TOOL_NAMES = ("calculator", "search", "sql", "python")


def make_tools(names: list[str], *, index: str | None = None, database: str | None = None,
               python_timeout: float = 10.0, python_memory_mb: int = 512) -> list[Tool]:
    tools = []
    for name in dict.fromkeys(names):
        if name == "calculator":
            tools.append(calculator_tool())
        elif name == "search":
            if not index:
                raise LmstackError("the search tool needs --index INDEX")
            tools.append(search_tool(index))
        elif name == "sql":
            if not database:
                raise LmstackError("the sql tool needs --db DATABASE")
            tools.append(sql_tool(database))
        elif name == "python":
            tools.append(python_tool(python_timeout, python_memory_mb))
        else:
            raise LmstackError(f"unknown tool {name!r}; choose from {', '.join(TOOL_NAMES)}")
    if not tools:
        raise LmstackError(f"give at least one tool with --tools ({', '.join(TOOL_NAMES)})")
    return tools
