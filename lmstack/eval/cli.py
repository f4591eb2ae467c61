"""`lmstack eval ...`: thin commands over `lmstack.eval`; every score lands in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Evaluate a model: lm-eval tasks, perplexity, judges, arena ratings, reports.",
                  no_args_is_help=True)

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


@app.command()
def run(
    model: str = MODEL,
    tasks: str = typer.Option(..., "--tasks", "-t", help="Comma-separated task names (shipped: lmstack_mc, "
                              "lmstack_arith, lmstack_rewrite, lmstack_prose), lm-eval YAML files or folders of them."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", min=0, max=64,
                                              help="Few-shot examples per prompt (default: each task's own)."),
    limit: Optional[float] = typer.Option(None, "--limit", min=0.0001, max=1e9,
                                          help="Documents per task: a count, or a fraction below 1."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1, max=4096,
                                   help="Requests per forward pass (sorted by length)."),
    apply_chat_template: bool = typer.Option(False, "--apply-chat-template",
                                             help="Format prompts with the model's chat template."),
    seed: int = typer.Option(1234, "--seed", min=0, max=2**32 - 1, help="Few-shot draws, sampling, bootstrap."),
    bootstrap_iters: int = typer.Option(1000, "--bootstrap-iters", min=0, max=100_000,
                                        help="Resamples for the standard error of BLEU, chrF, perplexity (0: none)."),
    window: int = typer.Option(2048, "--window", min=2, max=1_000_000, help="Rolling perplexity: tokens per window."),
    stride: int = typer.Option(1024, "--stride", min=1, max=1_000_000, help="Rolling perplexity: window step."),
    adapter: Optional[Path] = ADAPTER,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder (default: one in the lmstack "
                                          "home per model, tasks and settings, resumed when run again)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the run in OUTPUT again from scratch."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run OUTPUT holds."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Score MODEL on lm-evaluation-harness tasks; results are saved as they are computed."""
    from lmstack.eval.run import EvalSettings, evaluate

    settings = EvalSettings(num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
                            apply_chat_template=apply_chat_template, seed=seed, bootstrap_iters=bootstrap_iters,
                            window=window, stride=stride)
    with _progress(enabled=not json_output) as progress:
        results = evaluate(model, tasks, settings=settings, adapter=adapter, device=device, dtype=dtype, output=output,
                           overwrite=overwrite, resume=resume, progress=progress)
    if json_output:
        typer.echo(json.dumps(results, indent=2))
        return
    _print_results(results)


def _progress(enabled: bool):
    """A context giving a `progress(task, done, total)` callback that draws a bar per task on stderr."""
    import contextlib

    from rich.console import Console
    from rich.progress import Progress

    if not enabled:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def bars():
        with Progress(console=Console(stderr=True), transient=True) as bar:
            ids: dict[str, int] = {}

            def update(task: str, done: int, total: int) -> None:
                if task not in ids:
                    ids[task] = bar.add_task(task, total=total)
                bar.update(ids[task], completed=done)

            yield update

    return bars()


def _print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("task", "metric", "value", "± stderr", "n")
    for task, scores in results["results"].items():
        for key, value in scores.items():
            if "_stderr" in key:
                continue
            stderr = scores.get(key.replace(",", "_stderr,", 1) if "," in key else f"{key}_stderr")
            table.add_row(task, key, f"{value:.4f}", f"{stderr:.4f}" if stderr is not None else "-",
                          str(results["n-samples"][task]["effective"]))
    console = Console()
    console.print(table)
    console.print(f"model {results['config']['model']} ({results['config']['model_id']}); "
                  f"run folder {results['output']}", highlight=False)
