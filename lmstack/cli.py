"""The `lmstack` command: one group per stage, each a thin call of the library.

Only typer and each stage's small `cli.py` are imported here; torch and the heavy code load
inside the command that needs them, so `lmstack --help` answers at once.
"""

from __future__ import annotations

import sys

import typer

from lmstack.data.cli import app as data_app
from lmstack.eval.cli import app as eval_app
from lmstack.generate import cli as generate_cli
from lmstack.hub import cli as hub_cli
from lmstack.registry.cli import app as registry_app
from lmstack.train.cli import app as train_app

app = typer.Typer(
    help="An open LLM's whole life on your own machine: load, chat, fine-tune, align, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("pull")(hub_cli.pull)
app.command("models")(hub_cli.models)
app.command("generate")(generate_cli.generate)
app.command("chat")(generate_cli.chat)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(registry_app, name="registry")


@app.command("export")
def export(
    model: str = typer.Argument(..., help="Catalog name, GGUF path, HF directory or registry id."),
    out: str = typer.Argument(..., help="Output directory."),
    format: str = typer.Option("hf", "--format", "-f", help="Output format: hf (a transformers directory)."),
    dtype: str = typer.Option("fp32", "--dtype", help="Weights dtype: fp32, bf16 or fp16."),
) -> None:
    """Export a model, e.g. a Hugging Face directory that transformers loads as is."""
    import lmstack
    from lmstack.model.loaded import check_export_format

    check_export_format(format)  # before the load, which takes seconds
    path = lmstack.load(model, device="cpu").save(out, format=format, dtype=dtype)
    typer.echo(f"exported {model} to {path}")


def main() -> None:
    from lmstack.errors import LmstackError

    try:
        app()
    except LmstackError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
