"""Task metrics, defined as lm-evaluation-harness defines them, with standard errors.

- multiple choice: `acc` (the highest-log-likelihood choice is the gold one) and `acc_norm` (the
  same after dividing each log-likelihood by the choice's length in characters), `acc_bytes`
  (by UTF-8 bytes);
- generation: `exact_match` (with ignore_case / ignore_punctuation / regexes_to_ignore), BLEU,
  chrF and TER through sacrebleu, ROUGE-1/2/L F1 through rouge-score, MAUVE through mauve-text
  (the generations against the references as two distributions of sentence features);
- likelihood: `perplexity` and `acc` (greedy) for single continuations; `word_perplexity`,
  `byte_perplexity` and `bits_per_byte` for whole documents.

Means get the standard error of the mean; corpus-level scores (BLEU, chrF, TER, perplexities) a
bootstrap standard error over documents with a fixed seed; MAUVE, a clustering per estimate, none.
"""

from __future__ import annotations

import math
import random
import re
import string
from typing import TYPE_CHECKING, Any, Callable, Sequence

from lmstack.errors import LmstackError

if TYPE_CHECKING:
    from lmstack.eval.task import Prompt, Task

METRICS_BY_TYPE = {
    "multiple_choice": ("acc", "acc_norm", "acc_bytes"),
    "generate_until": ("exact_match", "bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL", "mauve"),
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "acc_bytes": True, "exact_match": True, "bleu": True,
                    "chrf": True, "ter": False, "mauve": True, "rouge1": True, "rouge2": True, "rougeL": True, "perplexity": False,
                    "word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean: sample standard deviation / sqrt(n)."""
    if len(values) < 2:
        return None
    mu = mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1) / len(values))


def bootstrap_stderr(statistic: Callable[[list], float], items: list, *, iters: int, seed: int) -> float | None:
    """Standard deviation of `statistic` over `iters` resamples of `items` with replacement."""
    if iters < 2 or len(items) < 2:
        return None
    rnd = random.Random(seed)
    values = [statistic(rnd.choices(items, k=len(items))) for _ in range(iters)]
    mu = mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


# --- multiple choice ---------------------------------------------------------------------------


def multiple_choice_scores(loglikelihoods: Sequence[float], choices: Sequence[str], gold: Any) -> dict[str, float]:
    """acc, acc_norm and acc_bytes of one question; `gold` an index, a list of indices or a choice text."""
    def best(values: Sequence[float]) -> int:
        return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, as numpy's argmax

    pred = best(loglikelihoods)
    pred_norm = best([ll / len(c) for ll, c in zip(loglikelihoods, choices)])
    pred_bytes = best([ll / len(c.encode("utf-8")) for ll, c in zip(loglikelihoods, choices)])
    golds = gold_indices(gold, choices)
    return {"acc": float(pred in golds), "acc_norm": float(pred_norm in golds), "acc_bytes": float(pred_bytes in golds)}


def gold_indices(gold: Any, choices: Sequence[str]) -> list[int]:
    """The gold choice(s) as indices; an out-of-range or unknown gold matches nothing (scored wrong)."""
    golds = gold if isinstance(gold, list) else [gold]
    indices = []
    for g in golds:
        if isinstance(g, str):
            g = choices.index(g) if g in choices else -1
        indices.append(g if isinstance(g, int) and 0 <= g < len(choices) else -1)
    return indices


# --- generation --------------------------------------------------------------------------------


def exact_match(prediction: str, reference: str, *, ignore_case: bool = False, ignore_punctuation: bool = False,
                ignore_numbers: bool = False, regexes_to_ignore: Sequence[str] | None = None) -> float:
    for pattern in regexes_to_ignore or ():
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    removed = (string.punctuation if ignore_punctuation else "") + (string.digits if ignore_numbers else "")
    if removed:
        table = str.maketrans("", "", removed)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return float(prediction == reference)


def corpus_score(metric: str, pairs: Sequence[tuple[str, str]]) -> float:
    """BLEU, chrF or TER (sacrebleu, 0-100) of (prediction, reference) pairs."""
    import sacrebleu

    predictions = [p for p, _ in pairs]
    references = [[r for _, r in pairs]]
    scorer = {"bleu": sacrebleu.corpus_bleu, "chrf": sacrebleu.corpus_chrf, "ter": sacrebleu.corpus_ter}[metric]
    return scorer(predictions, references).score


def rouge_scores(prediction: str, references: Sequence[str], metrics: Sequence[str]) -> dict[str, float]:
    """ROUGE F1 (rouge-score, 0-1) of one prediction: the best over its references."""
    scorer = _rouge_scorer(tuple(metrics))
    best = {m: 0.0 for m in metrics}
    for reference in references:
        for name, score in scorer.score(reference, prediction).items():
            best[name] = max(best[name], score.fmeasure)
    return best


_ROUGE_SCORERS: dict[tuple[str, ...], Any] = {}


def _rouge_scorer(metrics: tuple[str, ...]):
    if metrics not in _ROUGE_SCORERS:
        try:
            from rouge_score import rouge_scorer
        except ImportError:
            raise LmstackError("ROUGE needs the rouge-score package: pip install rouge-score") from None
        _ROUGE_SCORERS[metrics] = rouge_scorer.RougeScorer(list(metrics), use_stemmer=False)
    return _ROUGE_SCORERS[metrics]


MAUVE_OPTIONS = {"features": "all-minilm-l6-v2", "num_buckets": "auto", "scaling_factor": 5.0}
_EMBEDDERS: dict[str, Any] = {}


def mauve_score(predictions: Sequence[str], references: Sequence[str], *, features: str = "all-minilm-l6-v2",
                num_buckets: int | str = "auto", scaling_factor: float = 5.0, seed: int = 1234) -> float:
    """MAUVE (mauve-text, 0-1) between the generations and the references: both embedded by
    `features` (the MiniLM sentence embedder, or `model:REF` for any lmstack model's mean-pooled
    last hidden states), quantised by k-means into `num_buckets` clusters (auto: n / 10), and the
    area under the divergence frontier of the two histograms."""
    try:
        import mauve
    except ImportError:
        raise LmstackError("MAUVE needs the mauve-text package: pip install mauve-text") from None
    from lmstack.rag.embeddings import embed, load_embedder  # the one MiniLM / lmstack-model embedder

    if features not in _EMBEDDERS:
        _EMBEDDERS[features] = load_embedder(features)

    def featurise(texts: Sequence[str]):  # an empty generation becomes one space: an embedder needs a token
        return embed(_EMBEDDERS[features], [t if t.strip() else " " for t in texts])

    result = mauve.compute_mauve(p_features=featurise(references), q_features=featurise(predictions),
                                 num_buckets=num_buckets, mauve_scaling_factor=scaling_factor, seed=seed)
    return float(result.mauve)


# --- likelihood of whole documents -------------------------------------------------------------


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def weighted_perplexity(items: Sequence[tuple[float, int]]) -> float:
    """exp(-total log-likelihood / total units): units are words or bytes."""
    return math.exp(-sum(ll for ll, _ in items) / sum(n for _, n in items))


def bits_per_byte(items: Sequence[tuple[float, int]]) -> float:
    return -sum(ll for ll, _ in items) / sum(n for _, n in items) / math.log(2)


# --- a task's scores from its documents' outputs -----------------------------------------------


def task_results(task: Task, prompts: Sequence[Prompt], outputs: Sequence[Any], *, bootstrap_iters: int = 1000,
                 seed: int = 1234) -> dict[str, float | None]:
    """`{metric: value, metric_stderr: s}` of one task; `outputs[i]` is what the model gave `prompts[i]`:

    multiple_choice a list of (log-likelihood, greedy) per choice, loglikelihood one such pair,
    loglikelihood_rolling the document's total log-likelihood, generate_until the generated text.
    Metrics of a second or later filter are keyed `metric,filter` (and `metric_stderr,filter`).
    """
    kind, wanted = task.output_type, [m.name for m in task.metrics]
    if kind == "multiple_choice":
        per_doc = [multiple_choice_scores([ll for ll, _ in out], p.choices, p.target) for p, out in zip(prompts, outputs)]
        return _means({m: [d[m] for d in per_doc] for m in wanted})
    if kind == "loglikelihood":
        results = _means({"acc": [float(greedy) for _, greedy in outputs]}) if "acc" in wanted else {}
        if "perplexity" in wanted:
            lls = [ll for ll, _ in outputs]
            results |= _corpus("perplexity", lambda xs: math.exp(-mean(xs)), lls, bootstrap_iters, seed)
        return results
    if kind == "loglikelihood_rolling":
        texts = [p.target for p in prompts]
        units = {"word_perplexity": [count_words(t) for t in texts],
                 "byte_perplexity": [len(t.encode("utf-8")) for t in texts],
                 "bits_per_byte": [len(t.encode("utf-8")) for t in texts]}
        results: dict[str, float | None] = {}
        for metric in wanted:
            statistic = bits_per_byte if metric == "bits_per_byte" else weighted_perplexity
            results |= _corpus(metric, statistic, list(zip(outputs, units[metric])), bootstrap_iters, seed)
        return results
    results = {}
    for position, filter_ in enumerate(task.filters):
        suffix = "" if position == 0 else f",{filter_.name}"
        scores = generation_scores(task, prompts, [filter_.apply(text) for text in outputs], bootstrap_iters, seed)
        results |= {key + suffix: value for key, value in scores.items()}
    return results


def generation_scores(task: Task, prompts: Sequence[Prompt], responses: Sequence[str], bootstrap_iters: int,
                      seed: int) -> dict[str, float | None]:
    references = [reference_texts(p) for p in prompts]
    results: dict[str, float | None] = {}
    rouge = [m.name for m in task.metrics if m.name.startswith("rouge")]
    if rouge:
        per_doc = [rouge_scores(r, refs, rouge) for r, refs in zip(responses, references)]
        results |= _means({m: [d[m] for d in per_doc] for m in rouge})
    for metric in task.metrics:
        if metric.name == "exact_match":
            per_doc = [max(exact_match(r, ref, **metric.options) for ref in refs) for r, refs in zip(responses, references)]
            results |= _means({"exact_match": per_doc})
        elif metric.name in ("bleu", "chrf", "ter"):
            pairs = [(r, refs[0]) for r, refs in zip(responses, references)]
            results |= _corpus(metric.name, lambda xs, m=metric.name: corpus_score(m, xs), pairs, bootstrap_iters, seed)
        elif metric.name == "mauve":
            options = {**MAUVE_OPTIONS, **metric.options}
            score = mauve_score(responses, [refs[0] for refs in references], seed=seed, **options)
            results |= {"mauve": score, "mauve_stderr": None}
    return results


def reference_texts(prompt: Prompt) -> list[str]:
    """The gold answer(s) of a document as text."""
    target = prompt.target
    if prompt.choices is not None and isinstance(target, int):
        target = prompt.choices[target]
    return [str(t) for t in target] if isinstance(target, list) else [str(target)]


def _means(per_doc: dict[str, list[float]]) -> dict[str, float | None]:
    results: dict[str, float | None] = {}
    for metric, values in per_doc.items():
        results[metric] = mean(values)
        results[f"{metric}_stderr"] = mean_stderr(values)
    return results


def _corpus(metric: str, statistic: Callable[[list], float], items: list, iters: int, seed: int
            ) -> dict[str, float | None]:
    return {metric: statistic(items), f"{metric}_stderr": bootstrap_stderr(statistic, items, iters=iters, seed=seed)}
