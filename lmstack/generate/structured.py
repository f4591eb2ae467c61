"""Structured output: decode only what a JSON schema, regex, choice list or grammar allows.

At every step the grammar engine (`llguidance`) computes which tokens can extend the text so far
into something the grammar still accepts; every other token gets a logit of -inf before sampling,
and the chosen token advances the grammar. So the output always parses, whatever the model would
have preferred. GBNF grammars (llama.cpp's format) are converted to Lark by llguidance.

    grammar = Grammar.json_schema({"type": "object", "properties": {"name": {"type": "string"}}})
    Request(prompt_ids, constraint=grammar.constraint(tokenizer, vocab_size, stop_token_ids))
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmstack.errors import LmstackError

KINDS = ("json_schema", "regex", "choice", "lark", "gbnf")
_LL_TOKENIZERS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Grammar:
    """What the output must match: `kind` is one of KINDS, `source` its text."""

    kind: str
    source: str

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> "Grammar":
        return cls("json_schema", schema if isinstance(schema, str) else json.dumps(schema))

    @classmethod
    def regex(cls, pattern: str) -> "Grammar":
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: list[str]) -> "Grammar":
        if not options or not all(isinstance(o, str) and o for o in options):
            raise LmstackError("a choice list needs at least one option, each a non-empty string")
        return cls("choice", json.dumps(options))

    @classmethod
    def lark(cls, source: str) -> "Grammar":
        return cls("lark", source)

    @classmethod
    def gbnf(cls, source: str) -> "Grammar":
        return cls("gbnf", source)

    def compiled(self) -> str:
        """llguidance's grammar definition; a bad grammar raises LmstackError naming the problem."""
        import llguidance

        if self.kind not in KINDS:
            raise LmstackError(f"unknown grammar kind '{self.kind}'; use one of {', '.join(KINDS)}")
        try:
            definition = llguidance.grammar_from(self.kind, self.source)
        except (ValueError, json.JSONDecodeError) as error:
            raise LmstackError(f"the {self.kind.replace('_', ' ')} is not valid: {error}") from None
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(definition)
        if is_error:
            raise LmstackError(f"the {self.kind.replace('_', ' ')} is not valid: {messages[0]}")
        return definition

    def constraint(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> "Constraint":
        return Constraint(self.compiled(), ll_tokenizer(tokenizer, vocab_size, stop_token_ids))


def ll_tokenizer(tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> Any:
    """llguidance's view of our tokenizer (about a second to build, so built once per tokenizer)."""
    import llguidance

    key = (vocab_size, tuple(stop_token_ids))
    built = _LL_TOKENIZERS.setdefault(tokenizer, {})
    if key not in built:
        if not stop_token_ids:
            raise LmstackError("structured output needs a stop token (an EOS) to end the output; the tokenizer has none")
        built[key] = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size,
                                            eos_token=list(stop_token_ids))
    return built[key]


class Constraint:
    """One request's grammar state: masks logits, advances on each chosen token."""

    def __init__(self, definition: str, tokenizer: Any):
        self.definition, self.tokenizer = definition, tokenizer
        self.matcher: Any = None
        self.mask_seconds = 0.0  # time spent computing masks (the per-token overhead)
        self.steps = 0

    def start(self) -> None:
        import llguidance

        self.matcher = llguidance.LLMatcher(self.tokenizer, self.definition, log_level=0)
        self._check()

    def mask_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` [V] with every token the grammar forbids set to -inf."""
        import time

        start = time.perf_counter()
        allowed = np.frombuffer(self.matcher.compute_logit_bias(), dtype=np.uint8)
        self._check()
        mask = torch.from_numpy(allowed == 0).to(scores.device)
        masked = scores.masked_fill(mask[: scores.shape[-1]], float("-inf"))
        self.mask_seconds += time.perf_counter() - start
        self.steps += 1
        return masked

    def advance(self, token: int) -> None:
        self.matcher.consume_token(token)
        self._check()

    def finished(self) -> bool:
        return self.matcher.is_stopped()

    def _check(self) -> None:
        if self.matcher.is_error():
            raise LmstackError(f"structured output failed: {self.matcher.get_error()}")
