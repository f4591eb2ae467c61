"""Structured output: every constrained output parses and validates.

A tiny random model with a small byte-level BPE tokenizer samples freely; only the grammar keeps
its output in shape, so these tests check the constraint machinery, not the model. The grammars
are bounded (max lengths, ranges), so a finished output must end with the stop token.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.generate.structured import Grammar, grammar_from_options
from lmstack.generate.text import generate_text

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

SCHEMAS = [
    {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "admin": {"type": "boolean"}},
     "required": ["name", "age", "admin"], "additionalProperties": False},
    {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -5, "maximum": 5},
                                                   "y": {"type": "integer", "minimum": 0, "maximum": 9}},
                  "required": ["x", "y"], "additionalProperties": False}},
     "required": ["tags", "point"], "additionalProperties": False},
    {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[a-f0-9]{4}$"},
        "kind": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1, "maximum": 9}]}},
     "required": ["id", "kind"], "additionalProperties": False},
    {"type": "array", "items": {"type": "string", "enum": ["yes", "no"]}, "minItems": 1, "maxItems": 4},
]

ARITHMETIC_LARK = """
start: sum | "(" sum ")" OP sum
sum: NUMBER | NUMBER OP NUMBER | NUMBER OP NUMBER OP NUMBER
NUMBER: /[1-9][0-9]{0,2}/
OP: "+" | "*" | "-"
"""

GREETING_GBNF = r"""
root ::= greeting " " name "!"
greeting ::= "hello" | "hi" | "hey"
name ::= [A-Z] [a-z] [a-z]? [a-z]? [a-z]?
"""


@pytest.fixture(scope="module")
def loaded():
    """A tiny random model over a 300-token byte-level BPE vocabulary (any text is expressible)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer
    from lmstack.tokenizer import Tokenizer

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [json.dumps({"name": "ada", "age": 36, "admin": True, "tags": ["red", "blue"]}), "hello Bob! 12+7*3"]
    backend.train_from_iterator(corpus * 20, trainer)
    tokenizer = Tokenizer(backend, special_tokens={"eos_token": "<|endoftext|>"})
    torch.manual_seed(0)
    config = ModelConfig(family="llama", vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=128,
                         num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=1024)
    return SimpleNamespace(model=Transformer(config).eval(), tokenizer=tokenizer, config=config, generation_config={})


def outputs(loaded, grammar: Grammar, seeds=(0, 1, 2)) -> list[str]:
    texts = []
    for seed in seeds:
        result = generate_text(loaded, "ok", raw=True, grammar=grammar, max_new_tokens=400, temperature=1.0, seed=seed)
        assert result.finish_reason == "stop", result.text  # bounded grammars end, with the stop token
        texts.append(result.text)
    return texts


@pytest.mark.parametrize("schema", SCHEMAS, ids=["flat", "nested", "pattern-anyof", "array"])
def test_json_schema_outputs_validate(loaded, schema):
    for text in outputs(loaded, Grammar.json_schema(schema)):
        jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("pattern", [r"\d{3}-\d{4}", r"(yes|no), because [a-z]{1,10}\.", r"[A-Z][a-z]{2,6}( [A-Z][a-z]{2,6})?"])
def test_regex_outputs_match(loaded, pattern):
    for text in outputs(loaded, Grammar.regex(pattern)):
        assert re.fullmatch(pattern, text), text


def test_choice_outputs_are_one_of_the_options(loaded):
    options = ["red", "green", "blue sky"]
    texts = outputs(loaded, Grammar.choice(options), seeds=range(6))
    assert set(texts) <= set(options)


def test_lark_grammar_outputs_parse(loaded):
    for text in outputs(loaded, Grammar.lark(ARITHMETIC_LARK)):
        assert re.fullmatch(r"(\(?[1-9][0-9]{0,2}([-+*][1-9][0-9]{0,2}){0,2}\)?)([-+*][1-9][0-9]{0,2}){0,3}", text)
        assert isinstance(eval(text, {"__builtins__": {}}), int)  # well-formed arithmetic


def test_gbnf_grammar_is_converted_and_outputs_match(loaded):
    for text in outputs(loaded, Grammar.gbnf(GREETING_GBNF)):
        assert re.fullmatch(r"(hello|hi|hey) [A-Z][a-z]{1,4}!", text), text


def test_constraints_mix_with_free_requests_in_one_batch(loaded):
    schema = SCHEMAS[0]
    free = generate_text(loaded, "ok", raw=True, max_new_tokens=20, temperature=1.0, seed=4)
    results = [generate_text(loaded, ["ok", "ok"], raw=True, grammar=Grammar.json_schema(schema), max_new_tokens=400,
                             temperature=1.0, seed=4)]
    for result in results[0]:
        jsonschema.validate(json.loads(result.text), schema)
    assert free.text  # the same model unconstrained still produces free text


def test_grammar_from_command_line_options(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMAS[0]), encoding="utf-8")
    assert grammar_from_options(json_schema=str(schema)).kind == "json_schema"
    assert grammar_from_options(regex=r"\d+").kind == "regex"
    gbnf = tmp_path / "g.gbnf"
    gbnf.write_text(GREETING_GBNF, encoding="utf-8")
    assert grammar_from_options(grammar=str(gbnf)).kind == "gbnf"
    assert grammar_from_options(choices=["a", "b"]).kind == "choice"
    assert grammar_from_options() is None


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(regex="(unclosed"), "regex is not valid"),
        (dict(regex=r"\d", choices=["a"]), "give one output constraint"),
        (dict(grammar="rules.txt"), "ends in .gbnf"),
    ],
)
def test_bad_grammars_are_clear_errors(options, message):
    with pytest.raises(LmstackError, match=message):
        grammar_from_options(**options)


def test_bad_schema_file_is_named(tmp_path):
    bad = tmp_path / "schema.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(LmstackError, match="schema.json is not valid JSON"):
        grammar_from_options(json_schema=str(bad))
