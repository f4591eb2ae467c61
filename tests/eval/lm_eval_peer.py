"""lm-evaluation-harness as the reference (test helpers): the shipped task files made readable by
it, its scores on the same weights, and the comparison with ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmstack.eval.task import SHIPPED_TASKS


def harness_config(name: str) -> dict:
    """A shipped task's config with absolute data paths (the harness reads relative ones from the working dir)."""
    config = yaml.safe_load((SHIPPED_TASKS / f"{name}.yaml").read_text())
    data = config["dataset_kwargs"]["data_files"]
    config["dataset_kwargs"]["data_files"] = {split: str(SHIPPED_TASKS / f) for split, f in data.items()}
    return config


def harness_task_files(names: list[str], folder: Path) -> list[Path]:
    files = []
    for name in names:
        files.append(folder / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(harness_config(name)))
    return files


def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def harness_results(model_dir: Path, tasks: list[str], tmp_path: Path, monkeypatch, limit: int) -> dict:
    """lm-eval's `hf` backend (transformers) on the same weights and the same task files."""
    import lm_eval

    offline_datasets(tmp_path, monkeypatch)
    files = harness_task_files(tasks, tmp_path)
    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", device="cpu",
                                   tasks=[str(f) for f in files], limit=limit, batch_size=8, log_samples=True,
                                   bootstrap_iters=0)


def assert_same_scores(ours: dict, theirs: dict, run_folder: Path) -> None:
    """Every metric, and every document's log-likelihoods, equal the harness's."""
    for task, results in ours["results"].items():
        expected = {k.removesuffix(",none"): v for k, v in theirs["results"][task].items() if k.endswith(",none")}
        for metric, value in results.items():
            if "_stderr" not in metric:
                assert value == pytest.approx(expected[metric], rel=1e-4), (task, metric)
        rows = {json.loads(line)["doc"]: json.loads(line)["output"]
                for line in (run_folder / "samples" / f"{task}.jsonl").read_text().splitlines()}
        for sample in theirs["samples"][task]:
            mine = rows[sample["doc_id"]]
            got = [ll for ll, _ in mine] if isinstance(mine, list) else [mine]
            first = [r[0] for r in sample["resps"]]  # (ll, greedy) per choice, or the document's ll
            assert got == pytest.approx([float(f[0] if isinstance(f, (list, tuple)) else f) for f in first],
                                        rel=1e-4, abs=1e-4)
