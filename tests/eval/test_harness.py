"""lmstack as lm-eval's `lmstack` backend: declared as an entry point, and the harness's own
command line scores every request kind through it exactly as `lmstack eval run` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval_peer import harness_task_files

from lmstack.eval.run import EvalSettings, evaluate

pytest.importorskip("lm_eval")

TASKS = ["lmstack_mc", "lmstack_prose", "lmstack_arith"]  # loglikelihood, loglikelihood_rolling, generate_until


def test_the_backend_is_an_lm_eval_entry_point():
    from importlib.metadata import entry_points

    from lmstack.eval.harness import LmstackLM, register_entry_points

    [entry] = [e for e in entry_points(group="lm_eval.models") if e.name == "lmstack"]
    assert entry.load() is LmstackLM
    register_entry_points()
    from lm_eval.api.registry import get_model

    assert get_model("lmstack") is LmstackLM


def test_lm_eval_command_line_runs_through_lmstack(tiny_model_dir, tmp_path):
    files = harness_task_files(TASKS, tmp_path)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "lmstack.eval.harness", "--model", "lmstack",
               "--model_args", f"model={tiny_model_dir},dtype=fp32", "--tasks", ",".join(map(str, files)),
               "--limit", "6", "--batch_size", "4", "--output_path", str(tmp_path / "out"), "--log_samples"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    ours = evaluate(str(tiny_model_dir), "lmstack_mc,lmstack_prose,lmstack_arith", output=tmp_path / "ours",
                    settings=EvalSettings(limit=6, batch_size=4), dtype="fp32")["results"]
    for task in TASKS:
        for metric, value in ours[task].items():
            if "_stderr" not in metric and "," not in metric:
                assert theirs[task][f"{metric},strict-match" if task == "lmstack_arith" else f"{metric},none"] == \
                    pytest.approx(value, rel=1e-4), (task, metric)
    generated = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_lmstack_arith_*.jsonl")).open()]
    mine = {json.loads(line)["doc"]: json.loads(line)["output"]
            for line in (tmp_path / "ours" / "samples" / "lmstack_arith.jsonl").open()}
    assert {row["doc_id"]: row["resps"][0][0] for row in generated} == mine
