"""`lmstack eval perplexity` and `lmstack eval answers`: scores recorded in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Evaluate a model: perplexity on text, answer-match rate on questions.", no_args_is_help=True)

ADAPTER = typer.Option(None, "--adapter", help="A PEFT adapter directory to apply on top of MODEL.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda if available).")


def _record(loaded, metric: str, value: float, dataset: str, details: dict) -> None:
    from lmstack import registry

    if loaded.registry_id:
        registry.add_score(loaded.registry_id, metric, value, dataset=dataset, details=details)


@app.command()
def perplexity(
    model: str = typer.Argument(..., help="Catalog name, GGUF path, HF directory, adapter directory or registry id."),
    text: str = typer.Argument(..., help="A text file, or lmstack:general_heldout for the shipped prose."),
    adapter: Optional[Path] = ADAPTER,
    device: Optional[str] = DEVICE,
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Perplexity of MODEL on a text file (lower is better)."""
    import lmstack
    from lmstack.data import dataset_path
    from lmstack.eval import perplexity as compute

    path = dataset_path(text)
    loaded = lmstack.load(model, device=device, adapter=adapter)
    value = compute(loaded, path.read_text(encoding="utf-8"))
    _record(loaded, "perplexity", value, str(path), {})
    typer.echo(json.dumps({"model": loaded.name, "perplexity": value}) if json_output else f"perplexity {value:.3f}")


@app.command()
def answers(
    model: str = typer.Argument(..., help="Catalog name, GGUF path, HF directory, adapter directory or registry id."),
    dataset: str = typer.Argument(..., help="JSONL of {messages, expected}, or lmstack:identity_heldout."),
    adapter: Optional[Path] = ADAPTER,
    device: Optional[str] = DEVICE,
    max_new_tokens: int = typer.Option(48, help="Tokens per answer."),
    show: int = typer.Option(3, help="How many answers to print."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON with every answer."),
) -> None:
    """How often MODEL's greedy answer contains the expected text."""
    import lmstack
    from lmstack.data import read_records
    from lmstack.eval import answer_match_rate

    records = read_records(dataset)  # a file, or lmstack:NAME for a shipped dataset
    loaded = lmstack.load(model, device=device, adapter=adapter)
    report = answer_match_rate(loaded, records, max_new_tokens=max_new_tokens)
    _record(loaded, "answer_match", report.rate, dataset, {"matched": report.matched, "total": report.total})
    if json_output:
        typer.echo(json.dumps({"model": loaded.name, "rate": report.rate, "rows": report.rows}, indent=2))
        return
    for row in report.rows[:show]:
        typer.echo(f"Q: {row['question']}\nA: {row['answer']}\n")
    typer.echo(f"answer match {report.matched}/{report.total} = {report.rate:.0%}")
