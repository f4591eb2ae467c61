"""`lmstack.eval.likelihood` and `lmstack eval answers`: scores recorded in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Evaluate a model: perplexity on text, answer-match rate on questions.", no_args_is_help=True)

MODEL = typer.Argument(..., help="Catalog name, GGUF path, HF directory, adapter directory or registry id.")
ADAPTER = typer.Option(None, "--adapter", help="A PEFT adapter directory to apply on top of MODEL.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda if available).")
DTYPE = typer.Option(None, "--dtype", help="auto (bf16 where the hardware has it, else fp32), fp32, bf16, fp16.")


@app.command()
def perplexity(
    model: str = MODEL,
    text: str = typer.Argument(..., help="A text file, or lmstack:general_heldout for the shipped prose."),
    adapter: Optional[Path] = ADAPTER,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    window: int = typer.Option(512, "--window", min=2, help="Tokens per scoring window."),
    stride: int = typer.Option(256, "--stride", min=1, help="Tokens the window advances by."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Perplexity of MODEL on a text file (lower is better)."""
    from lmstack.eval.likelihood import evaluate_perplexity

    result = evaluate_perplexity(model, text, adapter=adapter, device=device, dtype=dtype, window=window,
                                 stride=stride)
    typer.echo(json.dumps(vars(result)) if json_output else f"perplexity {result.perplexity:.3f}")


@app.command()
def answers(
    model: str = MODEL,
    dataset: str = typer.Argument(..., help="JSONL of {messages, expected}, or lmstack:identity_heldout."),
    adapter: Optional[Path] = ADAPTER,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    max_new_tokens: int = typer.Option(48, min=1, help="Tokens per answer."),
    show: int = typer.Option(3, min=0, help="How many answers to print."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON with every answer."),
) -> None:
    """How often MODEL's greedy answer contains the expected text."""
    from lmstack.eval.answers import evaluate_answers

    report = evaluate_answers(model, dataset, adapter=adapter, device=device, dtype=dtype,
                              max_new_tokens=max_new_tokens)
    if json_output:
        typer.echo(json.dumps({"model": report.model, "rate": report.rate, "rows": report.rows}, indent=2,
                              ensure_ascii=False))
        return
    for row in report.rows[:show]:
        typer.echo(f"Q: {row['question']}\nA: {row['answer']}\n")
    typer.echo(f"answer match {report.matched}/{report.total} = {report.rate:.0%}")
