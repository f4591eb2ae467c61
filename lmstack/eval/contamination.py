"""Contamination: how much of a task's documents a training dataset already contains.

Both sides are lowercased and split into words; a task document is contaminated when any run
of `n` consecutive words from it (its prompt and answer) also appears in the training data — the
n-gram overlap test of GPT-3 and lm-evaluation-harness (which use n = 13 on long documents; the
default here is 8, because many task documents are a sentence or two). Documents shorter than
`n` words cannot be tested this way; they are counted apart, not called clean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from lmstack.data import dataset_path, read_records
from lmstack.errors import LmstackError
from lmstack.eval.metrics import reference_texts
from lmstack.eval.task import Task
from lmstack.inputs import read_text

WORD = re.compile(r"\w+")


@dataclass
class Overlap:
    task: str
    documents: int
    contaminated: int
    too_short: int  # fewer than n words: not testable
    mean_overlap: float  # average share of a tested document's n-grams found in the training data
    examples: list[int]  # indices of the first contaminated documents

    @property
    def rate(self) -> float:
        tested = self.documents - self.too_short
        return self.contaminated / tested if tested else 0.0


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def training_ngrams(dataset: str, n: int) -> set[tuple[str, ...]]:
    """Every n-gram of every string in a dataset (JSONL/JSON/CSV/Parquet records, or a .txt file)."""
    path = dataset_path(dataset)
    texts = [read_text(path, "training data")] if path.suffix == ".txt" else list(_strings(read_records(dataset)))
    grams: set[tuple[str, ...]] = set()
    for text in texts:
        grams |= ngrams(text, n)
    if not grams:
        raise LmstackError(f"{dataset} has no run of {n} words; nothing to compare against (lower --ngram?)")
    return grams


def _strings(value: Any) -> Iterable[str]:
    """The text inside a record at any depth (messages, prompt/chosen/rejected, text...)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def task_overlap(task: Task, grams: set[tuple[str, ...]], n: int, *, examples: int = 5) -> Overlap:
    contaminated, too_short, shares, hits = 0, 0, [], []
    prompts = task.prompts(num_fewshot=0)
    for prompt in prompts:
        context = " ".join(prompt.context) if isinstance(prompt.context, list) else prompt.context
        own = ngrams(f"{context} {' '.join(reference_texts(prompt))}", n)  # what a leaked example holds
        if not own:
            too_short += 1
            continue
        found = len(own & grams)
        shares.append(found / len(own))
        if found:
            contaminated += 1
            hits.append(prompt.index)
    return Overlap(task.name, len(prompts), contaminated, too_short, sum(shares) / len(shares) if shares else 0.0,
                   hits[:examples])


def contamination(tasks: list[Task], dataset: str, *, n: int = 8) -> list[Overlap]:
    """The overlap of each task with the training dataset."""
    if not 1 <= n <= 64:
        raise LmstackError(f"the n-gram length must be in 1..64, got {n}")
    grams = training_ngrams(dataset, n)
    return [task_overlap(task, grams, n) for task in tasks]
