"""`lmstack registry list` and `lmstack registry show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.registry.cli import app


pytestmark = pytest.mark.usefixtures("lmstack_home")


@pytest.fixture
def family(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "base.gguf").write_bytes(b"GGUF")
    base = registry.record("model", tmp_path / "base.gguf", name="base", operation="pull")
    data = registry.record("dataset", tmp_path / "chat.jsonl", name="chat", operation="convert")
    sft = registry.record(
        "model", tmp_path / "sft", name="base-sft", operation="sft", parents=[base, data],
        recipe={"lr": 0.001},
    )  # fmt: skip
    registry.add_score(sft, "accuracy", 0.75, dataset="arc-easy")
    return {"base": base, "data": data, "sft": sft}


def family_path(artifact_id: str) -> Path:
    return registry.get(artifact_id).path


def _run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def test_list_json_and_kind_filter(family):
    everything = json.loads(_run("list", "--json").stdout)
    datasets = json.loads(_run("list", "--json", "--kind", "dataset").stdout)

    assert [a["id"] for a in everything] == [family["base"], family["data"], family["sft"]]
    assert [a["id"] for a in datasets] == [family["data"]]


def test_list_table_marks_missing_paths(family):
    table = _run("list").stdout

    assert family["base"] in table and "base-sft" in table
    assert table.count("(missing)") == 2  # chat.jsonl and sft/ were never written


def test_show_json(family):
    shown = json.loads(_run("show", family["sft"], "--json").stdout)

    assert shown["recipe"] == {"lr": 0.001}
    assert [a["id"] for a in shown["lineage"]] == [family["base"], family["data"]]
    measured = [(s["metric"], s["value"], s["dataset"]) for s in shown["scores"]]
    assert measured == [("accuracy", 0.75, "arc-easy")]
    by_path = json.loads(_run("show", str(family_path(family["base"])), "--json").stdout)
    assert by_path["id"] == family["base"]
    base = json.loads(_run("show", family["base"], "--json").stdout)
    assert [a["id"] for a in base["children"]] == [family["sft"]]


def test_show_text(family):
    text = _run("show", family["sft"]).stdout

    assert "base-sft" in text and family["base"] in text and "arc-easy" in text and "0.75" in text


def test_show_unknown_id_raises_the_user_error():
    result = _run("show", "m-00000000")

    assert isinstance(result.exception, LmstackError)
    assert "lmstack registry list" in str(result.exception)
