"""Hostile input for `lmstack eval ...`, `lmstack leaderboard` and `lmstack registry tree`: every
bad file, value and output is refused with one line, before any model loads, and nothing of the
user's is touched."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from harness import refused, run, untouched, usage_error

from lmstack.eval.task import SHIPPED_TASKS

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))
from tiny_model import write_tiny_model  # noqa: E402  (the eval tests' helper)

GOOD_TASK = """task: colors
dataset_path: json
dataset_kwargs:
  data_files: {test: data.jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: "{{q}}?"
doc_to_choice: "{{[a, b]}}"
doc_to_target: label
"""


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "data.jsonl").write_text(json.dumps({"q": "sky", "a": "blue", "b": "red", "label": 0}) + "\n")
    (folder / "t.yaml").write_text(GOOD_TASK)
    return folder


def run_task(task_file: Path, home: Path, *extra: str):
    # A model that does not exist: a task error must be reported before the model is looked at.
    return run(["eval", "run", "no-such-model", "--tasks", str(task_file), *extra], home=home)


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.replace("multiple_choice", "essay"), "unknown output_type 'essay'"),
    (lambda t: t.replace("{{q}}?", "q2"), "`doc_to_text: q2` names no column"),
    (lambda t: t.replace("{{q}}?", "{{ q }"), "document 0: `doc_to_text` failed to render"),
    (lambda t: t.replace('"{{q}}?"', "!function utils.text"), "does not run"),
    (lambda t: t.replace("data.jsonl", "gone.jsonl"), "data file not found: gone.jsonl"),
    (lambda t: t + "num_fewshot: -2\n", "num_fewshot must be an integer >= 0"),
    (lambda t: t + "metric_list: [{metric: bleu}]\n", "metric 'bleu' is not available for multiple_choice"),
    (lambda t: t + "fewshot_config: {sampler: balanced}\n", "fewshot_config.sampler must be one of"),
    (lambda t: "task: [a, b]\n", "needs `task: NAME`"),
    (lambda t: "- just\n- a list\n", "must be a YAML mapping"),
    (lambda t: t + "  broken: [\n", "is not valid YAML"),
])
def test_bad_task_files(edit, expected, task_dir, home):
    task_file = task_dir / "t.yaml"
    task_file.write_text(edit(GOOD_TASK))
    with untouched(task_dir):
        refused(run_task(task_file, home), expected)


def test_task_file_encoding_binary_and_empty(task_dir, home):
    bad = task_dir / "t.yaml"
    bad.write_bytes(b"task: caf\xe9\n")
    refused(run_task(bad, home), "not valid UTF-8", "line 1")
    bad.write_bytes(b"\x00\x01binary")
    refused(run_task(bad, home), "looks binary")
    bad.write_bytes(b"")
    refused(run_task(bad, home), "is empty")
    refused(run_task(task_dir / "missing.yaml", home), "task file not found")
    data_only = task_dir / "data-only"
    data_only.mkdir()
    refused(run_task(data_only, home), "holds no .yaml files")


def test_damaged_data_names_the_line(task_dir, home):
    (task_dir / "data.jsonl").write_text('{"q": "sky", "a": "blue", "b": "red", "label": 0}\n{"q": \n')
    with untouched(task_dir):
        refused(run_task(task_dir / "t.yaml", home), "line 2", "invalid JSON")


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--limit", "-1"), ("--num-fewshot", "-1"),
                                             ("--window", "1"), ("--bootstrap-iters", "1000001")])
def test_out_of_range_numbers_are_usage_errors(flag, value, task_dir, home):
    usage_error(run_task(task_dir / "t.yaml", home, flag, value), flag)


def test_stride_longer_than_window_is_refused(task_dir, home):
    refused(run_task(task_dir / "t.yaml", home, "--window", "8", "--stride", "9"), "stride <= window")


def test_outputs_that_are_not_free_are_refused(task_dir, home, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with untouched(busy):
        refused(run_task(task_dir / "t.yaml", home, "--output", str(busy)), "folder is not empty", "--overwrite")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    with untouched(a_file):
        refused(run_task(task_dir / "t.yaml", home, "--output", str(a_file)), "is a file")


def test_unknown_model_after_good_task(task_dir, home):
    refused(run_task(task_dir / "t.yaml", home), "'no-such-model' is not a model lmstack knows")


def test_resuming_another_run_is_refused(task_dir, home, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"model": "other", "model_id": "m-00000000", "limit": 5}))
    model_dir = write_tiny_model(tmp_path / "tiny", hidden=32, layers=1, context=128)
    with untouched(out):
        refused(run(["eval", "run", str(model_dir), "--tasks", str(task_dir / "t.yaml"), "--output", str(out),
                     "--resume"], home=home), "holds a run with a different")


def test_judge_refuses_bad_questions_and_missing_judge(home, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("")
    refused(run(["eval", "judge", str(questions), "-m", "a", "--judge", "a", "-o", str(tmp_path / "o")], home=home),
            "is empty")
    questions.write_text(json.dumps({"prompt": "no question field"}) + "\n")
    refused(run(["eval", "judge", str(questions), "-m", "a", "--judge", "a", "-o", str(tmp_path / "o")], home=home),
            "record 1 needs a non-empty 'question'")
    questions.write_text(json.dumps({"question": "hi"}) + "\n")
    refused(run(["eval", "judge", str(questions), "-m", "a", "-o", str(tmp_path / "o")], home=home), "name one judge")
    usage_error(run(["eval", "judge", str(questions), "-m", "a", "--judge", "a", "-o", str(tmp_path / "o"),
                     "--max-new-tokens", "0"], home=home), "--max-new-tokens")


def test_arena_refuses_damaged_battles(home, tmp_path):
    battles = tmp_path / "b.jsonl"
    battles.write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "both"}) + "\n")
    with untouched(battles):
        refused(run(["eval", "arena", str(battles)], home=home), "battle 1 has winner 'both'")
    battles.write_text('{"model_a": "x", "model_b": "y", "winner": "tie"}\n{"model_a": \n')
    refused(run(["eval", "arena", str(battles)], home=home), "line 2", "invalid JSON")
    battles.write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "error"}) + "\n")
    refused(run(["eval", "arena", str(battles)], home=home), "every judgment failed")
    usage_error(run(["eval", "arena", str(battles), "--rounds", "-1"], home=home), "--rounds")


def test_contamination_refuses_missing_training_data(home, tmp_path):
    refused(run(["eval", "contamination", "--tasks", "lmstack_mc", "--train", str(tmp_path / "none.jsonl")],
                home=home), "training data not found")
    usage_error(run(["eval", "contamination", "--tasks", "lmstack_mc", "--train", "x.jsonl", "--ngram", "0"],
                    home=home), "--ngram")


def test_report_leaderboard_and_tree_refuse_bad_input(home, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with untouched(busy):
        refused(run(["eval", "report", "m-00000000", "-o", str(busy)], home=home), "folder is not empty")
    refused(run(["eval", "report", "m-00000000", "-o", str(tmp_path / "r")], home=home), "no artifact 'm-00000000'")
    refused(run(["leaderboard", "--weights", "accuracy=abc"], home=home), "bad weight 'accuracy=abc'")
    refused(run(["registry", "tree", "m-00000000"], home=home), "no artifact 'm-00000000'")
    picture = tmp_path / "tree.png"
    picture.write_bytes(b"mine")
    with untouched(picture):
        refused(run(["registry", "tree", "m-00000000", "--png", str(picture)], home=home), "file exists", "--overwrite")


def test_shipped_task_copied_with_its_data_runs_unchanged(home, tmp_path):
    """Not hostile, but the contract's other half: the same command on good input works."""
    folder = tmp_path / "copy"
    shutil.copytree(SHIPPED_TASKS, folder, ignore=shutil.ignore_patterns("*.py"))
    model = write_tiny_model(tmp_path / "tiny", hidden=32, layers=1, context=128)
    result = run(["eval", "run", str(model), "--tasks", str(folder / "lmstack_mc.yaml"), "--limit", "3", "--json",
                  "--output", str(tmp_path / "out")], home=home)
    assert result.returncode == 0, result.stderr.decode()
    results = json.loads(result.stdout)["results"]["lmstack_mc"]
    assert set(results) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}  # no filter suffix
