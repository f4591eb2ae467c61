"""Curating a post-training dataset: remove duplicates, low-quality records and evaluation leaks.

Each function reads a dataset in any format the data stage knows, writes the records it keeps
(unchanged, in their own format) as JSONL, and returns a report of what it removed and why:

    dedup_dataset          exact copies and MinHash near-duplicates, with the clusters found
    filter_dataset         rule filters (`filters.py`) and an optional quality score from a model
    decontaminate_dataset  records sharing a word n-gram with an evaluation set (flag or remove)
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from lmstack import registry
from lmstack.data.dedup import deduplicate, record_text
from lmstack.data.filters import FilterRules, check_text
from lmstack.data.formats import normalize_record
from lmstack.data.io import dataset_path, dataset_reference, read_source, write_jsonl
from lmstack.errors import LmstackError
from lmstack.home import atomic_write_text, check_output

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class CurationReport:
    input: str
    output: str
    kept: int
    total: int
    removed: Counter = field(default_factory=Counter)  # reason -> count
    flagged: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "removed": dict(self.removed)}

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.removed.most_common()) or "none"
        flagged = f", {self.flagged} flagged" if self.flagged else ""
        return f"kept {self.kept} of {self.total} records{flagged} (removed: {reasons}) -> {self.output}"


def _read_texts(path: str | Path) -> tuple[list[dict], list[str]]:
    """The raw records of a dataset and the text of each (read through the format normalizers)."""
    source = read_source(path)
    if not source.records:
        raise LmstackError(f"{source.path}: the dataset is empty; nothing to curate")
    texts = [record_text(normalize_record(r, where=source.where(i))) for i, r in enumerate(source.records)]
    return source.records, texts


def _finish(report: CurationReport, records: Iterable[dict], operation: str, settings: dict[str, Any],
            report_path: str | Path | None) -> CurationReport:
    """Write the kept records and the report, and record the new dataset with its parent."""
    write_jsonl(report.output, records)
    if report_path:
        atomic_write_text(report_path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    parent = registry.id_for(dataset_path(report.input), kind="dataset")
    registry.record("dataset", report.output, name=Path(report.output).name, operation=operation,
                    parents=[parent], recipe=settings, datasets=[dataset_reference(report.input)],
                    metadata={"kept": report.kept, "total": report.total, "removed": dict(report.removed),
                              "flagged": report.flagged})
    return report


def _check_outputs(output: str | Path, report_path: str | Path | None, overwrite: bool) -> None:
    check_output(output, overwrite=overwrite, directory=False)
    if report_path:
        check_output(report_path, overwrite=overwrite, directory=False)


# --- dedup -----------------------------------------------------------------------------------------


def dedup_dataset(input: str | Path, output: str | Path, *, threshold: float = 0.8, num_perm: int = 128,
                  ngram: int = 5, near: bool = True, report_path: str | Path | None = None,
                  overwrite: bool = False, workers: int = 1) -> CurationReport:
    """Drop exact and near-duplicate records; the report lists every cluster (kept and removed)."""
    _check_outputs(output, report_path, overwrite)
    records, texts = _read_texts(input)
    result = deduplicate(texts, threshold=threshold, num_perm=num_perm, ngram=ngram, near=near, workers=workers)
    report = CurationReport(str(dataset_reference(str(input))), str(output), len(result.keep), len(records))
    report.removed.update({"exact_duplicate": result.removed_exact, "near_duplicate": result.removed_near})
    report.removed = +report.removed  # drop zero counts
    report.details["clusters"] = [
        {"kind": c.kind, "kept": c.kept, "removed": c.removed, "text": texts[c.kept][:120]}
        for c in sorted(result.clusters, key=lambda c: -len(c.removed))
    ]
    settings = {"threshold": threshold, "num_perm": num_perm, "ngram": ngram, "near": near}
    return _finish(report, (records[i] for i in result.keep), "dedup", settings, report_path)


# --- filter ----------------------------------------------------------------------------------------


def filter_dataset(input: str | Path, output: str | Path, *, rules: FilterRules | None = None,
                   scorer: str | None = None, min_score: float | None = None,
                   report_path: str | Path | None = None, overwrite: bool = False) -> CurationReport:
    """Drop records that break a rule, then (with `scorer`) those whose quality score is below `min_score`.

    scorer: `judge:MODEL` (the model's probability of answering "yes" to "is this a helpful,
    correct, well-written answer?") or `perplexity:MODEL` (the negative log-perplexity of the
    text under MODEL, CCNet's quality signal: fluent text scores higher).
    """
    rules = rules or FilterRules()
    if scorer and min_score is None:
        raise LmstackError("a scorer needs --min-score (records scoring below it are removed)")
    _check_outputs(output, report_path, overwrite)
    records, texts = _read_texts(input)
    score = load_scorer(scorer) if scorer else None
    report = CurationReport(str(dataset_reference(str(input))), str(output), 0, len(records))
    kept, scores = [], []
    for record, text in zip(records, texts):
        reason = check_text(text, rules)
        if reason is None and score is not None:
            value = score(record)
            scores.append(value)
            reason = "low_score" if value < min_score else None
        if reason:
            report.removed[reason] += 1
        else:
            kept.append(record)
    report.kept = len(kept)
    if scores:
        report.details["score"] = {"scorer": scorer, "min_score": min_score, "mean": sum(scores) / len(scores),
                                   "min": min(scores), "max": max(scores)}
    settings = {"rules": rules.model_dump(), "scorer": scorer, "min_score": min_score}
    return _finish(report, kept, "filter", settings, report_path)


JUDGE_QUESTION = ("Here is a conversation.\n\n{text}\n\nIs the last answer helpful, correct and well written? "
                  "Reply with yes or no.")


def load_scorer(spec: str) -> Callable[[dict], float]:
    """A function from a raw record to its quality score (higher is better), from `kind:MODEL`."""
    kind, _, model = spec.partition(":")
    if kind not in ("judge", "perplexity") or not model:
        raise LmstackError(f"unknown scorer {spec!r}; use judge:MODEL or perplexity:MODEL")
    from lmstack.hub.llm import LocalLLM
    from lmstack.hub.load import load_model

    bundle = load_model(model, device="cpu", dtype="fp32")
    if kind == "perplexity":
        from lmstack.eval.likelihood import perplexity

        return lambda record: -math.log(perplexity(bundle, record_text(normalize_record(record))))
    judge = LocalLLM(model, bundle=bundle)
    return lambda record: judge.yes_probability([JUDGE_QUESTION.format(text=record_text(normalize_record(record)))])[0]


# --- decontaminate --------------------------------------------------------------------------------


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def contamination_index(eval_sets: Sequence[str], n: int) -> dict[tuple[str, ...], str]:
    """Every word n-gram of the evaluation sets, mapped to the set it came from."""
    index: dict[tuple[str, ...], str] = {}
    for ref in eval_sets:
        _, texts = _read_texts(ref)
        for text in texts:
            for gram in ngrams(text, n):
                index.setdefault(gram, ref)
    if not index:
        raise LmstackError(f"the evaluation sets have no text of {n} words or more; lower --ngram")
    return index


def find_contamination(text: str, index: dict[tuple[str, ...], str], n: int) -> tuple[str, str] | None:
    """(evaluation set, the shared n-gram) for the first n-gram `text` shares with the index, else None."""
    for gram in ngrams(text, n):
        if gram in index:
            return index[gram], " ".join(gram)
    return None


def decontaminate_dataset(input: str | Path, output: str | Path, eval_sets: Sequence[str], *, ngram: int = 13,
                          action: str = "remove", report_path: str | Path | None = None,
                          overwrite: bool = False) -> CurationReport:
    """Remove (or, with action `flag`, mark with `contaminated`) records sharing an n-gram with an eval set.

    13 words is the overlap length GPT-3's contamination study used; short evaluation items need less.
    """
    if action not in ("remove", "flag"):
        raise LmstackError(f"unknown action {action!r}; use remove or flag")
    if not eval_sets:
        raise LmstackError("no evaluation set given; pass --eval FILE (or lmstack:NAME) one or more times")
    _check_outputs(output, report_path, overwrite)
    records, texts = _read_texts(input)
    index = contamination_index(eval_sets, ngram)
    report = CurationReport(str(dataset_reference(str(input))), str(output), 0, len(records))
    kept, matches = [], []
    for number, (record, text) in enumerate(zip(records, texts)):
        hit = find_contamination(text, index, ngram)
        if hit:
            matches.append({"record": number, "eval_set": hit[0], "ngram": hit[1]})
        if hit and action == "remove":
            report.removed["contaminated"] += 1
            continue
        if hit:
            report.flagged += 1
            record = {**record, "contaminated": {"eval_set": hit[0], "ngram": hit[1]}}
        kept.append(record)
    report.kept = len(kept)
    report.details["matches"] = matches
    settings = {"eval_sets": [dataset_reference(ref) for ref in eval_sets], "ngram": ngram, "action": action}
    return _finish(report, kept, "decontaminate", settings, report_path)
