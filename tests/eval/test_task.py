"""Task files in lm-evaluation-harness's format: prompts equal the harness's own, every data
format loads, and a bad file fails with one clear line before any model loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from lm_eval_peer import harness_config, offline_datasets

from lmstack.errors import LmstackError
from lmstack.eval.task import SHIPPED_TASKS, load_task, load_tasks, shipped_task_names

def harness_task(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides):
    """lm-eval's own ConfigurableTask for a shipped task."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.task import ConfigurableTask

    offline_datasets(tmp_path, monkeypatch)
    config = {**harness_config(name), **overrides}
    # ROUGE is an lmstack metric (the harness computes it only in Python task utilities).
    config["metric_list"] = [m for m in config.get("metric_list", []) if not m["metric"].startswith("rouge")] or None
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    return task


def chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


CASES = [("lmstack_mc", 0, False), ("lmstack_mc", 3, False), ("lmstack_mc", 2, True), ("lmstack_complete", 5, False),
         ("lmstack_arith", 3, False),
         ("lmstack_rewrite", 3, False), ("lmstack_rewrite", 3, True)]


@pytest.mark.parametrize(("name", "shots", "use_chat"), CASES)
def test_requests_equal_the_harness_requests(name, shots, use_chat, tmp_path, monkeypatch):
    harness = harness_task(name, tmp_path, monkeypatch, num_fewshot=shots)
    harness.build_all_requests(limit=25, apply_chat_template=use_chat, chat_template=chat if use_chat else None)
    expected = [instance.args for instance in harness.instances]
    prompts = load_task(SHIPPED_TASKS / f"{name}.yaml").prompts(num_fewshot=shots, limit=25,
                                                                 chat=chat if use_chat else None)
    if harness.OUTPUT_TYPE == "multiple_choice":
        got = [(p.context, c) for p in prompts for c in p.continuations]
    else:
        got = [p.context for p in prompts]
        expected = [args[0] for args in expected]
    assert got == expected


def test_multiple_choice_scores_equal_the_harness_process_results(tmp_path, monkeypatch):
    import random

    from lmstack.eval.metrics import multiple_choice_scores

    harness = harness_task("lmstack_mc", tmp_path, monkeypatch)
    prompts = load_task(SHIPPED_TASKS / "lmstack_mc.yaml").prompts(limit=60)
    rnd = random.Random(0)
    for prompt, doc in zip(prompts, harness.eval_docs):
        lls = [-rnd.uniform(0.5, 12) for _ in prompt.choices]
        expected = harness.process_results(doc, [(ll, False) for ll in lls])
        got = multiple_choice_scores(lls, prompt.choices, prompt.target)
        assert {k: got[k] for k in expected} == expected


def test_shipped_tasks_load_and_hash_their_files():
    assert shipped_task_names() == ["lmstack_arith", "lmstack_complete", "lmstack_mc", "lmstack_prose",
                                    "lmstack_rewrite"]
    tasks = {t.name: t for t in load_tasks(",".join(shipped_task_names()))}
    assert {t.output_type for t in tasks.values()} == {"multiple_choice", "generate_until", "loglikelihood_rolling"}
    assert all(len(t.content_hash) == 64 and t.docs for t in tasks.values())
    prose = tasks["lmstack_prose"].docs  # the text builder, one document per paragraph
    assert len(prose) == 8 and prose[0]["text"].startswith("The lighthouse keeper")
    assert all(t.reference == f"lmstack:task/{name}" for name, t in tasks.items())


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


BASE = """task: colors
dataset_path: {source}
{kwargs}test_split: {split}
output_type: multiple_choice
doc_to_text: "{{{{q}}}}?"
doc_to_choice: "{{{{[a, b]}}}}"
doc_to_target: label
"""


@pytest.mark.parametrize("form", ["csv", "parquet", "folder", "jsonl-include"])
def test_data_formats_and_include(form, tmp_path):
    rows = [{"q": "sky", "a": "blue", "b": "red", "label": 0}, {"q": "grass", "a": "pink", "b": "green", "label": 1}]
    if form == "csv":
        write(tmp_path / "d.csv", "q,a,b,label\n" + "".join(f"{r['q']},{r['a']},{r['b']},{r['label']}\n" for r in rows))
        task_file = write(tmp_path / "t.yaml", BASE.format(source="csv", split="train",
                                                            kwargs="dataset_kwargs:\n  data_files: d.csv\n"))
    elif form == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
        task_file = write(tmp_path / "t.yaml", BASE.format(source="parquet", split="train",
                                                            kwargs="dataset_kwargs:\n  data_files: [d.parquet]\n"))
    elif form == "folder":
        write(tmp_path / "data" / "test.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        task_file = write(tmp_path / "t.yaml", BASE.format(source="data", split="test", kwargs=""))
    else:
        write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write(tmp_path / "parent" / "base.yaml", BASE.format(source="json", split="train", kwargs=""))
        task_file = write(tmp_path / "t.yaml", "include: parent/base.yaml\ndataset_kwargs:\n  data_files: d.jsonl\n"
                                                "doc_to_text: \"Q: {{q}}\"\n")
    task = load_task(task_file)
    prompts = task.prompts()
    assert [p.target for p in prompts] == [0, 1]  # csv labels are numbers, as datasets infers them
    assert prompts[1].continuations == [" pink", " green"]
    assert prompts[0].context == ("Q: sky" if form == "jsonl-include" else "sky?")


def test_process_docs_mapping_and_description(tmp_path):
    write(tmp_path / "d.jsonl", json.dumps({"word": "Cat", "answer": "cats"}) + "\n")
    task = load_task(write(tmp_path / "t.yaml", """task: plural
dataset_path: json
dataset_kwargs: {data_files: {test: d.jsonl}}
test_split: test
output_type: generate_until
process_docs: {lower: "{{word | lower}}", gold: answer}
description: "Plurals.\\n"
doc_to_text: "{{lower}} ->"
doc_to_target: gold
"""))
    [prompt] = task.prompts()
    assert prompt.context == "Plurals.\ncat ->" and prompt.target == "cats"
    assert task.generation_kwargs["until"] == ["\n\n"]  # the harness's default: the few-shot delimiter


@pytest.mark.parametrize(("body", "message"), [
    ("output_type: ranking\n", "unknown output_type 'ranking'"),
    ("doc_to_text: questoin\n", "`doc_to_text: questoin` names no column"),
    ("doc_to_text: \"{{ q }\"\n", "`doc_to_text` failed to render"),
    ("doc_to_text: \"{{ missing }}\"\n", "'missing' is undefined"),
    ("process_docs: !function utils.process\n", "lmstack does not run"),
    ("colour: red\n", "unknown key `colour`"),
    ("metric_list: [{metric: bleu}]\n", "metric 'bleu' is not available for multiple_choice"),
    ("filter_list: [{name: x, filter: [{function: vote}]}]\n", "unknown filter function 'vote'"),
    ("test_split: dev\n", "no 'dev' split"),
    ("dataset_kwargs: {data_files: nowhere.jsonl}\n", "data file not found: nowhere.jsonl"),
    ("dataset_path: some/hub-dataset\n", "not json/csv/parquet/text nor a local folder"),
    ("doc_to_choice: \"{{ q }}\"\n", "not a non-empty list of strings"),
    ("process_results: !function utils.score\n", "lmstack does not run"),
])
def test_bad_task_files_fail_with_one_line(body, message, tmp_path):
    write(tmp_path / "d.jsonl", json.dumps({"q": "sky", "a": "blue", "b": "red", "label": 0}) + "\n")
    config = yaml.safe_load(BASE.format(source="json", split="train", kwargs="dataset_kwargs:\n  data_files: d.jsonl\n"))
    replaced = body.split(":")[0]
    text = yaml.safe_dump({k: v for k, v in config.items() if k != replaced}) + body  # the body's key wins
    with pytest.raises(LmstackError, match=re.escape(message)) as error:
        load_task(write(tmp_path / "t.yaml", text))
    assert "\n" not in str(error.value)


def test_task_names_files_and_folders_resolve(tmp_path):
    with pytest.raises(LmstackError, match="no task 'nonesuch'"):
        load_tasks("nonesuch")
    with pytest.raises(LmstackError, match="holds no .yaml files"):
        load_tasks(str(tmp_path))
    with pytest.raises(LmstackError, match="no tasks given"):
        load_tasks(" , ")
    assert [t.name for t in load_tasks(f"lmstack_mc,{SHIPPED_TASKS / 'lmstack_prose.yaml'}")] == ["lmstack_mc",
                                                                                             "lmstack_prose"]
