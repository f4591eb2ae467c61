"""Contamination: how much of a task's documents a training dataset already contains.

Both sides are lowercased and split into words; a task document is contaminated when any run
of `n` consecutive words from it (its prompt and answer) also appears in the training data — the
n-gram overlap test of GPT-3 and lm-evaluation-harness (which use n = 13 on long documents; the
default here is 8, because many task documents are a sentence or two). Documents shorter than
`n` words cannot be tested this way; they are counted apart, not called clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from lmstack.data import dataset_path, read_records
from lmstack.data.curate import ngrams
from lmstack.errors import LmstackError
from lmstack.eval.metrics import reference_texts
from lmstack.eval.task import Task
from lmstack.inputs import read_text


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


def training_texts(dataset: str) -> Iterable[str]:
    """Every string in a dataset (JSONL/JSON/CSV/Parquet records at any depth, or a .txt file)."""
    path = dataset_path(dataset)
    if path.suffix == ".txt":
        yield read_text(path, "training data")
        return
    yield from _strings(read_records(dataset))


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


def document_ngrams(task: Task, n: int) -> list[set[tuple[str, ...]]]:
    """The n-grams of each document: its prompt and its gold answer, what a leaked example holds."""
    grams = []
    for prompt in task.prompts(num_fewshot=0):
        context = " ".join(prompt.context) if isinstance(prompt.context, list) else prompt.context
        grams.append(ngrams(f"{context} {' '.join(reference_texts(prompt))}", n))
    return grams


def contamination(tasks: list[Task], dataset: str, *, n: int = 8, examples: int = 5) -> list[Overlap]:
    """The overlap of each task with the training dataset.

    The tasks' n-grams are indexed (they are small) and the training data streams past them once.
    """
    if not 1 <= n <= 64:
        raise LmstackError(f"the n-gram length must be in 1..64, got {n}")
    per_task = [document_ngrams(task, n) for task in tasks]
    wanted = set().union(*(grams for documents in per_task for grams in documents))
    found: set[tuple[str, ...]] = set()
    for text in training_texts(dataset):
        found |= ngrams(text, n) & wanted
    results = []
    for task, documents in zip(tasks, per_task):
        tested = [(i, grams) for i, grams in enumerate(documents) if grams]
        hits = [i for i, grams in tested if grams & found]
        shares = [len(grams & found) / len(grams) for _, grams in tested]
        results.append(Overlap(task.name, len(documents), len(hits), len(documents) - len(tested),
                               sum(shares) / len(shares) if shares else 0.0, hits[:examples]))
    return results
