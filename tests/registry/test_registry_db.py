"""The registry: record/update, lookups, scores, lineage, and many writers at once."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
from pathlib import Path

import pytest

from lmstack import registry
from lmstack.errors import LmstackError


pytestmark = pytest.mark.usefixtures("lmstack_home")


def _model(tmp_path: Path, name: str, operation: str = "sft", parents=()) -> str:
    path = tmp_path / name
    return registry.record("model", path, name=name, operation=operation, parents=parents)


def test_record_and_get(tmp_path, lmstack_home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    artifact_id = registry.record(
        "model", "out/sft", name="sft-run", operation="sft", source="local",
        recipe={"lr": 2e-4, "epochs": 1}, metadata={"params": 135_000_000},
    )  # fmt: skip

    artifact = registry.get(artifact_id)

    assert re.fullmatch(r"m-[0-9a-f]{8}", artifact_id)
    assert artifact.path == tmp_path / "out" / "sft" and artifact.path.is_absolute()
    described = (artifact.kind, artifact.name, artifact.operation, artifact.source)
    assert described == ("model", "sft-run", "sft", "local")
    assert artifact.recipe == {"lr": 2e-4, "epochs": 1}
    assert artifact.metadata == {"params": 135_000_000}
    assert artifact.parents == []
    assert (lmstack_home / "registry.db").is_file()
    assert artifact.to_dict()["path"] == str(tmp_path / "out" / "sft")


@pytest.mark.parametrize(
    ("kind", "prefix"), [("adapter", "a"), ("dataset", "d"), ("tokenizer", "t")]
)
def test_id_prefix_tells_the_kind(tmp_path, kind, prefix):
    artifact_id = registry.record(kind, tmp_path / "x", name="x", operation="make")
    assert artifact_id.startswith(prefix + "-")


def test_recording_again_updates_instead_of_duplicating(tmp_path):
    base = _model(tmp_path, "base", "pull")
    run = tmp_path / "run"
    first = registry.record("model", run, name="run", operation="sft", recipe={"lr": 1})
    second = registry.record(
        "model", run, name="run-v2", operation="sft", recipe={"lr": 2}, parents=[base]
    )
    other_operation = registry.record("model", run, name="run", operation="merge-adapter")

    assert first == second != other_operation
    assert registry.get(first).recipe == {"lr": 2} and registry.get(first).name == "run-v2"
    assert registry.get(first).parents == [base]
    assert len(registry.list_artifacts()) == 3


def test_find_by_path_and_list_by_kind(tmp_path):
    model = _model(tmp_path, "m")
    dataset = registry.record("dataset", tmp_path / "d.jsonl", name="d", operation="convert")

    assert registry.find_by_path(tmp_path / "m").id == model
    assert registry.find_by_path(tmp_path / "unknown") is None
    assert [a.id for a in registry.list_artifacts()] == [model, dataset]
    assert [a.id for a in registry.list_artifacts("dataset")] == [dataset]
    assert registry.list_artifacts("adapter") == []


def test_user_errors(tmp_path):
    with pytest.raises(LmstackError, match="lmstack registry list"):
        registry.get("m-00000000")
    with pytest.raises(LmstackError, match="unknown artifact kind 'weights'"):
        registry.record("weights", tmp_path, name="x", operation="x")
    with pytest.raises(LmstackError, match="parent 'm-00000000' is not in the registry"):
        _model(tmp_path, "child", parents=["m-00000000"])
    with pytest.raises(LmstackError, match="no artifact"):
        registry.add_score("m-00000000", "accuracy", 0.5)
    assert registry.list_artifacts() == []


def test_none_parents_are_skipped(tmp_path):
    base = _model(tmp_path, "base", "pull")

    child = _model(tmp_path, "child", parents=[None, base, base])

    assert registry.get(child).parents == [base]


def test_scores(tmp_path):
    model = _model(tmp_path, "m")
    registry.add_score(model, "perplexity", 12.5, dataset="wikitext", details={"tokens": 4096})
    registry.add_score(model, "accuracy", 1)

    measured = registry.scores(model)

    assert [(s.metric, s.value, s.dataset, s.details) for s in measured] == [
        ("perplexity", 12.5, "wikitext", {"tokens": 4096}),
        ("accuracy", 1.0, None, None),
    ]
    assert registry.scores(_model(tmp_path, "other")) == []


def test_lineage_and_children(tmp_path):
    """base -> sft -> dpo; sft + other -> merged (a diamond back to base through both)."""
    base = _model(tmp_path, "base", "pull")
    sft = _model(tmp_path, "sft", "sft", [base])
    other = _model(tmp_path, "other", "sft", [base])
    dpo = _model(tmp_path, "dpo", "dpo", [sft])
    merged = _model(tmp_path, "merged", "merge", [dpo, other])

    assert [a.id for a in registry.lineage(merged)] == [dpo, other, sft, base]
    assert [a.id for a in registry.lineage(base)] == []
    assert [a.id for a in registry.children(base)] == [sft, other]
    assert [a.id for a in registry.children(merged)] == []


def test_lineage_survives_a_cycle(tmp_path):
    base = _model(tmp_path, "base", "pull")
    child = _model(tmp_path, "child", "sft", [base])
    _model(tmp_path, "base", "pull", [child])  # re-recorded with its own descendant as parent

    assert [a.id for a in registry.lineage(child)] == [base]


def test_database_is_in_wal_mode(tmp_path, lmstack_home):
    _model(tmp_path, "m")
    with sqlite3.connect(lmstack_home / "registry.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _write_many(home: str, worker: int, count: int) -> None:
    import os

    os.environ["LMSTACK_HOME"] = home
    from lmstack import registry as worker_registry

    base_path = Path(home) / "shared-base"
    base = worker_registry.record("model", base_path, name="base", operation="pull")
    for index in range(count):
        name = f"w{worker}-{index}"
        artifact_id = worker_registry.record(
            "model", Path(home) / name, name=name, operation="sft", parents=[base]
        )
        worker_registry.add_score(artifact_id, "loss", index)


def test_concurrent_writers(lmstack_home):
    workers, count = 4, 15
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_write_many, args=(str(lmstack_home), worker, count))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)

    assert [process.exitcode for process in processes] == [0] * workers
    artifacts = registry.list_artifacts()
    assert len(artifacts) == workers * count + 1  # one shared base, recorded by all four
    base = registry.find_by_path(lmstack_home / "shared-base")
    assert len(registry.children(base.id)) == workers * count
    assert all(len(registry.scores(a.id)) == 1 for a in artifacts if a.id != base.id)
