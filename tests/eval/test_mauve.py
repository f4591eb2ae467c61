"""MAUVE: generations against references through mauve-text, on features from an lmstack model or
the MiniLM embedder; what the metric says about near and far text; bad options refused early."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lmstack.errors import LmstackError
from lmstack.eval.task import SHIPPED_TASKS, load_task

pytest.importorskip("mauve")


def mauve_task(folder: Path, **options) -> Path:
    """The shipped rewrite task, scored with MAUVE (and BLEU beside it)."""
    config = yaml.safe_load((SHIPPED_TASKS / "lmstack_rewrite.yaml").read_text())
    config["dataset_kwargs"]["data_files"] = {split: str(SHIPPED_TASKS / f)
                                              for split, f in config["dataset_kwargs"]["data_files"].items()}
    config["task"] = "rewrite_mauve"
    config["num_fewshot"] = 0
    config["metric_list"] = [{"metric": "bleu"}, {"metric": "mauve", **options}]
    path = folder / "rewrite_mauve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_scores_mauve_of_its_generations_with_model_features(tiny_model_dir, tmp_path):
    import mauve

    from lmstack.eval.run import EvalSettings, evaluate
    from lmstack.rag.embeddings import load_embedder

    features = f"model:{tiny_model_dir}"
    out = evaluate(str(tiny_model_dir), str(mauve_task(tmp_path, features=features, num_buckets=3)),
                   settings=EvalSettings(limit=24, batch_size=8, bootstrap_iters=10), output=tmp_path / "run")
    results = out["results"]["rewrite_mauve"]
    assert results["mauve_stderr"] is None and "bleu" in results
    # The same number from mauve-text directly: references as P, the filtered generations as Q, the run's seed.
    task = load_task(tmp_path / "rewrite_mauve.yaml")
    prompts = task.prompts(limit=24, num_fewshot=0)
    rows = {json.loads(line)["doc"]: json.loads(line)["output"]
            for line in (tmp_path / "run" / "samples" / "rewrite_mauve.jsonl").read_text().splitlines()}
    generations = [task.filters[0].apply(rows[p.index]) for p in prompts]
    embedder = load_embedder(features)
    expected = mauve.compute_mauve(p_features=embedder.embed_batch([p.target for p in prompts]),
                                   q_features=embedder.embed_batch([g if g.strip() else " " for g in generations]),
                                   num_buckets=3, seed=1234).mauve
    assert results["mauve"] == pytest.approx(expected, abs=1e-6)
    assert 0 < results["mauve"] < 1  # a random model's generations are not the references


@pytest.mark.real
def test_mauve_is_one_on_the_references_and_lower_the_further_the_text_is():
    from lmstack.eval.metrics import mauve_score

    rows = [json.loads(line) for line in (SHIPPED_TASKS / "lmstack_rewrite.jsonl").read_text().splitlines()]
    references = [row["past"] for row in rows]
    present = [row["sentence"] for row in rows]  # the same sentences in another tense
    unrelated = [json.loads(line)["question"]  # arithmetic questions
                 for line in (SHIPPED_TASKS / "lmstack_arith.jsonl").read_text().splitlines()]
    half = present[: len(present) // 2] + unrelated[len(unrelated) // 2 :]
    same, near = mauve_score(references, references), mauve_score(present, references)
    mixed, far = mauve_score(half, references), mauve_score(unrelated, references)
    assert same == pytest.approx(1.0)
    assert near > 0.9 > mixed > 0.1 > far, (near, mixed, far)  # measured: 1.0, 0.27, 0.004


@pytest.mark.parametrize(("options", "message"), [
    ({"features": "gpt2-large"}, "mauve features must be all-minilm-l6-v2, model:REF or openai:URL#MODEL"),
    ({"num_buckets": 1}, "mauve num_buckets must be auto or an integer in 2..10000, got 1"),
    ({"scaling_factor": float("nan")}, "mauve scaling_factor must be a number in (0, 1000]"),
    ({"bucket": 3}, "mauve has no option bucket"),
])
def test_bad_mauve_options_are_refused_when_the_task_loads(options, message, tmp_path):
    with pytest.raises(LmstackError, match=re.escape(message)):
        load_task(mauve_task(tmp_path, **options))
