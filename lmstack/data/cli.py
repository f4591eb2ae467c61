"""`lmstack data ...`: convert chat datasets between formats, inspect a dataset as a model sees it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Post-training datasets: convert formats, inspect token lengths and label masks.",
                  no_args_is_help=True)


@app.command()
def convert(
    input: Path = typer.Argument(..., help="Dataset file: JSONL, JSON, CSV or Parquet."),
    output: Path = typer.Argument(..., help="Where to write the converted JSONL."),
    to: str = typer.Option(..., "--to", help="Target chat format: messages, sharegpt or alpaca."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT file instead of refusing."),
) -> None:
    """Convert a chat dataset (OpenAI messages, ShareGPT, Alpaca) to another chat format."""
    from lmstack.data.formats import convert_file

    count = convert_file(input, output, to=to, overwrite=overwrite)
    typer.echo(f"Wrote {count} records in {to} format to {output}")


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="Dataset file: JSONL, JSON, CSV or Parquet."),
    model: str = typer.Option(..., "--model", help="Model whose tokenizer and chat template to use."),
    template: str = typer.Option(None, "--template", help="Chat template instead of the model's, by name: "
                                                          "chatml, llama3, gemma, alpaca."),
    plot: Path = typer.Option(None, "--plot", help="Write a histogram of token lengths to this PNG."),
    sample: int = typer.Option(0, "--sample", min=0, help="Index of the record to show as tokens."),
    max_len: int = typer.Option(None, "--max-len", min=1, help="Truncate sequences to this many tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot file instead of refusing."),
) -> None:
    """Count formats, token lengths and trained tokens; show one sample exactly as the model sees it."""
    from lmstack.data.inspect import inspect_dataset, print_report

    report = inspect_dataset(path, model, template=template, plot=plot, sample_index=sample, max_len=max_len,
                             overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_report(report)
