"""`lmstack registry list` and `lmstack registry show ID`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from lmstack.registry import Artifact, Score

app = typer.Typer(
    help="Browse the registry of models, adapters and datasets lmstack has made.",
    no_args_is_help=True,
)


@app.command("list")
def list_command(
    kind: str | None = typer.Option(None, "--kind", help="Only one kind: model, adapter..."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every recorded artifact, oldest first."""
    from lmstack import registry

    artifacts = registry.list_artifacts(kind)
    if json_output:
        typer.echo(json.dumps([artifact.to_dict() for artifact in artifacts], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("id", "kind", "name", "operation", "created")
    table.add_column("path", overflow="fold")
    for artifact in artifacts:
        path = escape(str(artifact.path))
        if not artifact.path.exists():
            path = f"[red]{path} (missing)[/red]"
        name, created = escape(artifact.name), artifact.created_at
        table.add_row(artifact.id, artifact.kind, name, artifact.operation, created, path)
    Console().print(table)


@app.command("tree")
def tree_command(
    reference: str = typer.Argument(..., metavar="ID", help="An artifact id (e.g. m-3f9a1c2b) or its path."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also draw the tree into this PNG file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing PNG file."),
) -> None:
    """The family tree of an artifact: its base models and everything made from them."""
    from rich.console import Console

    from lmstack.home import check_output
    from lmstack.registry.tree import family, render_png, render_text

    from lmstack.registry import lookup

    if png is not None:
        check_output(png, overwrite=overwrite, directory=False)
    tree = family(lookup(reference).id)
    Console().print(render_text(tree))
    if png is not None:
        typer.echo(f"drawn in {render_png(tree, png)}")


@app.command("show")
def show_command(
    reference: str = typer.Argument(..., metavar="ID", help="An artifact id (e.g. m-3f9a1c2b) or its path."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show one artifact: where it is, how it was made, its parents, children and scores."""
    from lmstack import registry

    artifact = registry.lookup(reference)
    artifact_id = artifact.id
    ancestors = registry.lineage(artifact_id)
    made_from_it = registry.children(artifact_id)
    measured = registry.scores(artifact_id)
    if json_output:
        details = {
            **artifact.to_dict(),
            "lineage": [ancestor.to_dict() for ancestor in ancestors],
            "children": [child.to_dict() for child in made_from_it],
            "scores": [score.to_dict() for score in measured],
        }
        typer.echo(json.dumps(details, indent=2))
        return
    _print_artifact(artifact, ancestors, made_from_it, measured)


def _print_artifact(
    artifact: Artifact,
    ancestors: list[Artifact],
    made_from_it: list[Artifact],
    measured: list[Score],
) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{artifact.id}[/bold]  {artifact.kind}  {escape(artifact.name)}")
    fields = {
        "path": artifact.path,
        "operation": artifact.operation,
        "source": artifact.source or "-",
        "created": artifact.created_at,
        "recipe": json.dumps(artifact.recipe, sort_keys=True) if artifact.recipe else "-",
        "metadata": json.dumps(artifact.metadata, sort_keys=True) if artifact.metadata else "-",
        "lineage": ", ".join(f"{a.id} ({a.name}, {a.operation})" for a in ancestors) or "-",
        "children": ", ".join(f"{c.id} ({c.name}, {c.operation})" for c in made_from_it) or "-",
    }
    for label, value in fields.items():
        console.print(f"{label + ':':<10} {value}", highlight=False, markup=False)
    if measured:
        table = Table("metric", "value", "dataset", "measured")
        for score in measured:
            value = f"{score.value:.6g}"
            table.add_row(score.metric, value, score.dataset or "-", score.created_at)
        console.print(table)
