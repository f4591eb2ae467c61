"""Hostile input to the engine's flags of `lmstack generate`: structured-output files and patterns,
speculative decoding and the KV cache budget. Every case: one clear line (or a usage error naming
the option), the right exit code, no traceback, the user's files untouched; grammar problems are
found before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import refused, run, untouched, usage_error

pytest.importorskip("llguidance")

MISSING_MODEL = "/nonexistent/model"  # a grammar error must be reported before the model is looked at


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(("content", "expected"), [
    (None, "JSON schema file not found"),
    ("", "is empty"),
    (b"\x00\x01binary\xff", "looks binary"),
    (b'{"type": "caf\xe9"}', "is not valid UTF-8"),
    ('{"type": "object",', "is not valid JSON"),
    ('["not", "a", "schema"]', "not a JSON schema"),
    ('{"type": "banana"}', "json schema is not valid"),
])
def test_bad_json_schema_files(home, tmp_path, content, expected):
    mine = tmp_path / "mine"
    mine.mkdir()
    schema = mine / "schema.json"
    if content is not None:
        write(schema, content)
    with untouched(mine):
        refused(run(["generate", MISSING_MODEL, "hi", "--json-schema", str(schema)], home=home), expected)


def test_a_folder_as_json_schema(home, tmp_path):
    refused(run(["generate", MISSING_MODEL, "hi", "--json-schema", str(tmp_path)], home=home), "is a folder")


@pytest.mark.parametrize("pattern", ["(unclosed", "[z-a]", "a{5,2}"])
def test_bad_regex(home, pattern):
    refused(run(["generate", MISSING_MODEL, "hi", "--regex", pattern], home=home), "regex is not valid")


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("rules.txt", 'root ::= "a"', "ends in .gbnf"),
    ("missing.gbnf", None, "grammar file not found"),
    ("bad.gbnf", "root ::= ( unbalanced", "gbnf is not valid"),
    ("undefined.gbnf", "root ::= missing-rule", "gbnf is not valid"),
    ("bad.lark", "start: (", "lark is not valid"),
    ("empty.lark", "", "is empty"),
])
def test_bad_grammar_files(home, tmp_path, name, content, expected):
    mine = tmp_path / "mine"
    mine.mkdir()
    grammar = mine / name
    if content is not None:
        write(grammar, content)
    with untouched(mine):
        refused(run(["generate", MISSING_MODEL, "hi", "--grammar", str(grammar)], home=home), expected)


def test_two_constraints_at_once(home, tmp_path):
    refused(run(["generate", MISSING_MODEL, "hi", "--regex", "a+", "--choice", "yes"], home=home),
            "give one output constraint, not --regex and --choice")


def test_an_empty_choice(home):
    refused(run(["generate", MISSING_MODEL, "hi", "--choice", "yes", "--choice", ""], home=home),
            "each a non-empty string")


@pytest.mark.parametrize("value", ["0", "-5", "lots", "nan"])
def test_kv_cache_budget_out_of_range(home, tiny_model_dir, value):
    usage_error(run(["generate", str(tiny_model_dir), "hi", "--kv-cache-mb", value], home=home), "--kv-cache-mb")


def test_unknown_draft_model(home, tiny_model_dir):
    refused(run(["generate", str(tiny_model_dir), "hi", "--speculative", "no-such-draft"], home=home),
            "is not a model lmstack knows")


def test_a_schema_the_vocabulary_cannot_spell(home, tmp_path, tiny_model_dir):
    """The tiny model has no quote character: JSON is out of its reach; the request fails, cleanly."""
    mine = tmp_path / "mine"
    mine.mkdir()
    schema = write(mine / "schema.json", json.dumps({"enum": ["ab", "cd"]}))
    with untouched(mine):
        refused(run(["generate", str(tiny_model_dir), "a b", "--json-schema", str(schema)], home=home),
                "structured output")


def test_a_valid_constraint_runs_on_the_tiny_model(home, tiny_model_dir):
    result = run(["generate", str(tiny_model_dir), "a b", "--choice", "abcd", "--choice", "cd", "--no-stream"],
                 home=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() in ("abcd", "cd")
