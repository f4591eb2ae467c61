"""`list_models` and the `lmstack pull` / `lmstack models` commands."""

from __future__ import annotations

import json

import typer
from hub_fakes import write_tiny_gguf
from typer.testing import CliRunner

from lmstack import registry
from lmstack.hub import CATALOG, list_models
from lmstack.hub import cli as hub_cli


def _app() -> typer.Typer:
    """The two commands mounted the way the lead mounts them in `lmstack/cli.py`."""
    app = typer.Typer()
    app.command("pull")(hub_cli.pull)
    app.command("models")(hub_cli.models)
    return app


def _by_name(models: list[dict]) -> dict[str, dict]:
    return {model["name"]: model for model in models}


def test_catalog_models_are_listed_before_pulling(tiny_model):
    models = _by_name(list_models())

    assert set(CATALOG) <= set(models)
    smollm2 = models["smollm2-135m-instruct"]
    assert smollm2["origin"] == "catalog" and smollm2["size"] == 98_362_432
    assert not models[tiny_model.name]["available"] and models[tiny_model.name]["path"] is None


def test_pulled_and_local_models(tiny_model, tmp_path):
    pulled = hub_cli_pull(tiny_model.name)
    exported = tmp_path / "export"
    exported.mkdir()
    (exported / "config.json").write_text("{}")
    (exported / "model.safetensors").write_bytes(b"x" * 1000)
    export_id = registry.record("model", exported, name="my-sft", operation="sft")
    registry.record("adapter", tmp_path / "adapter", name="my-lora", operation="sft")

    models = _by_name(list_models())

    assert models[tiny_model.name]["available"] and models[tiny_model.name]["path"] == pulled
    assert models[tiny_model.name]["registry_id"] == registry.find_by_path(pulled).id
    assert models["my-sft"] == {
        "name": "my-sft", "origin": "sft", "format": "hf", "available": True,
        "path": str(exported.resolve()), "size": 1002, "license": None,
        "description": models["my-sft"]["description"], "registry_id": export_id,
    }  # fmt: skip
    assert "my-lora" not in models
    assert [name for name in models].count(tiny_model.name) == 1


def hub_cli_pull(name: str) -> str:
    result = CliRunner().invoke(_app(), ["pull", name])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_models_command_json_and_table(tiny_model, tmp_path):
    gguf = write_tiny_gguf(tmp_path / "q8.gguf")
    registry.record("model", gguf, name="smollm2-q8", operation="quantize")
    runner = CliRunner()

    listed = json.loads(runner.invoke(_app(), ["models", "--json"]).stdout)
    table = runner.invoke(_app(), ["models"], env={"COLUMNS": "200"}).stdout

    assert _by_name(listed)["smollm2-q8"]["format"] == "gguf"
    assert "smollm2-q8" in table and "lmstack pull smollm2-135m-instruct" in table
