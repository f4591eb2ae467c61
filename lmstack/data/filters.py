"""Rule filters for text quality, the heuristics web-scale curation pipelines use (Gopher, C4,
FineWeb), each one short enough to read and each one saying why it rejected a document.

    length      too few or too many words
    symbols     too large a share of characters that are neither letters, digits nor spaces
    repetition  too many duplicated lines, or one word n-gram covering too much of the text
    language    too little natural language: few letters, or (for English) few common stop words

`check_text(text, rules)` returns the name of the first rule a text breaks, or None. The same
rules clean a pre-training corpus (`lmstack.pretrain.corpus`) and a post-training dataset
(`lmstack data filter`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

# The 20 most frequent English words; Gopher keeps a document only if it has at least two of a
# similar short list, which rejects tables, lists of names and boilerplate.
STOP_WORDS = frozenset("the be to of and a in that have i it for not on with he as you do at".split())
_WORD = re.compile(r"\w+", re.UNICODE)


class FilterRules(BaseModel):
    """Thresholds of the rule filters; a value of 0 (or `language: any`) turns a rule off."""

    model_config = ConfigDict(extra="forbid")

    min_words: int = Field(5, ge=0)
    max_words: int = Field(100_000, ge=0)
    max_symbol_ratio: float = Field(0.3, ge=0, le=1)  # non-alphanumeric, non-space characters
    max_duplicate_line_ratio: float = Field(0.3, ge=0, le=1)  # lines repeated elsewhere in the text
    max_top_ngram_ratio: float = Field(0.2, ge=0, le=1)  # characters covered by the most frequent 3-gram
    min_letter_ratio: float = Field(0.5, ge=0, le=1)  # letters among non-space characters
    language: str = Field("any", pattern="^(any|en)$")  # en: at least two English stop words


@dataclass(frozen=True)
class TextStats:
    words: int
    symbol_ratio: float
    duplicate_line_ratio: float
    top_ngram_ratio: float
    letter_ratio: float
    stop_words: int


def text_stats(text: str) -> TextStats:
    """The measurements every rule reads, computed in one pass over the text."""
    words = _WORD.findall(text.lower())
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    symbols = sum(not c.isalnum() for c in visible)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line_counts = Counter(lines)
    duplicated = sum(n for n in line_counts.values() if n > 1)
    return TextStats(
        words=len(words),
        symbol_ratio=symbols / max(1, len(visible)),
        duplicate_line_ratio=duplicated / max(1, len(lines)),
        top_ngram_ratio=_top_ngram_ratio(words, 3),
        letter_ratio=letters / max(1, len(visible)),
        stop_words=len(STOP_WORDS.intersection(words)),
    )


def _top_ngram_ratio(words: list[str], n: int, min_words: int = 50) -> float:
    """The share of word characters inside occurrences of the most frequent word n-gram (texts of
    fewer than `min_words` words score 0: in a short answer one repeated phrase is no signal)."""
    if len(words) < max(min_words, n + 1):
        return 0.0
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(map(len, gram)) / max(1, sum(map(len, words))))


def check_text(text: str, rules: FilterRules) -> str | None:
    """The first rule `text` breaks (`too_short`, `symbols`, ...), or None when it passes them all."""
    stats = text_stats(text)
    checks = (
        ("too_short", stats.words < rules.min_words),
        ("too_long", rules.max_words > 0 and stats.words > rules.max_words),
        ("symbols", rules.max_symbol_ratio > 0 and stats.symbol_ratio > rules.max_symbol_ratio),
        ("repeated_lines", rules.max_duplicate_line_ratio > 0
         and stats.duplicate_line_ratio > rules.max_duplicate_line_ratio),
        ("repeated_ngrams", rules.max_top_ngram_ratio > 0 and stats.top_ngram_ratio > rules.max_top_ngram_ratio),
        ("few_letters", stats.letter_ratio < rules.min_letter_ratio),
        ("language", rules.language == "en" and stats.stop_words < 2),
    )
    return next((name for name, broken in checks if broken), None)


# Lenient rules for a pre-training corpus that mixes prose with source code (symbol-heavy by nature).
CORPUS_RULES = FilterRules(max_symbol_ratio=0.5, min_letter_ratio=0.4, max_duplicate_line_ratio=0.5)
