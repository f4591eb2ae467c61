"""Answers that always parse: `response_format` and tool calls become grammars for the engine.

`response_format` json_object / json_schema constrain the reply to JSON (matching the schema).
JSON is written compactly (`{"a": 1, "b": 2}`): without this, a grammar that allows whitespace
between tokens lets a small model pad its answer with newlines until max_tokens runs out.

Tool calls: the model's reply is constrained to a valid call.

A call is the JSON object `{"name": ..., "arguments": {...}}`, its arguments checked against the
function's `parameters` schema by the grammar engine while decoding:

- `tool_choice` "required", or a named function: the whole reply is such a call.
- "auto" (the default when tools are given): the reply is either plain text that does not start
  with `{`, or a call: once the model opens a `{`, it is writing a call and can only finish one.
- "none": no constraint, no call.

    grammar = tool_grammar(tools, "auto")        # a Grammar for the engine, or None
    call = parse_call(reply_text, tools)         # {"name", "arguments" (a JSON string)} or None
"""

from __future__ import annotations

import json
from typing import Any

from lmstack.generate.structured import Grammar

COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def json_grammar(schema: dict[str, Any]) -> Grammar:
    """A JSON schema as a grammar, written compactly unless the schema says otherwise (x-guidance)."""
    return Grammar.json_schema(_compact(schema))


def _compact(schema: dict[str, Any]) -> dict[str, Any]:
    return {"x-guidance": COMPACT, **schema}


def format_grammar(response_format: Any) -> Grammar | None:
    """The grammar of a `response_format` (None for plain text)."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return json_grammar({"type": "object"})
    return json_grammar(response_format.json_schema.schema_ or {"type": "object"})


def call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """The JSON schema of one call to any of `tools` (or only to the one called `name`)."""
    options = []
    for tool in tools:
        function = tool["function"]
        if name is not None and function["name"] != name:
            continue
        parameters = function.get("parameters") or {"type": "object"}
        options.append({
            "type": "object",
            "properties": {"name": {"const": function["name"]}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_grammar(tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None) -> Grammar | None:
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return json_grammar(call_schema(tools, choice["function"]["name"]))
    if choice == "required":
        return json_grammar(call_schema(tools))
    # auto: text that does not open with "{", or one call (llguidance's Lark embeds a JSON schema)
    return Grammar.lark("start: TEXT | call\nTEXT: /[^{](.|\\n)*/\ncall: %json " + json.dumps(_compact(call_schema(tools))))


def opens_call(text: str) -> bool:
    """Whether a reply that starts with `text` is a tool call (its first character is `{`)."""
    return text.startswith("{")


def parse_call(text: str, tools: list[dict[str, Any]]) -> dict[str, str] | None:
    """The call in a reply, or None when the reply is text (or a call cut short by max_tokens)."""
    if not opens_call(text):
        return None
    try:
        call = json.loads(text)
    except json.JSONDecodeError:
        return None
    names = {tool["function"]["name"] for tool in tools}
    if not isinstance(call, dict) or call.get("name") not in names or not isinstance(call.get("arguments"), dict):
        return None
    return {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}
