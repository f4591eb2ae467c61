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
                              "lmstack_complete, lmstack_arith, lmstack_rewrite, lmstack_prose), lm-eval YAML files "
                              "or folders of them."),
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


@app.command()
def judge(
    questions: str = typer.Argument(..., help="JSONL of {question, reference?} (MT-Bench's {turns} works too)."),
    models: list[str] = typer.Option(..., "--model", "-m", help="One model (graded 1-10) or two (compared)."),
    judge_ref: Optional[str] = typer.Option(None, "--judge", help="A model lmstack loads, as the judge."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="An OpenAI-compatible endpoint, as the judge."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The model name the endpoint serves."),
    judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="Variable holding the API key."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for answers, judgments and battles."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUTPUT folder."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, max=8192, help="Tokens per answer."),
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """LLM-as-a-judge: grade one model's answers 1-10, or compare two with the position swap."""
    from lmstack.eval.judge import judge_models

    report = judge_models(questions, models, judge=judge_ref, judge_url=judge_url, judge_model=judge_model,
                          judge_key_env=judge_key_env, output=output, overwrite=overwrite,
                          max_new_tokens=max_new_tokens, device=device, dtype=dtype)
    summary = {"mode": report.mode, "judge": report.judge, "models": report.models, **report.summary}
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        typer.echo(f"{key + ':':<22} {value:.4g}" if isinstance(value, float) else f"{key + ':':<22} {value}")
    typer.echo(f"judgments in {output}")


@app.command()
def arena(
    battles: str = typer.Argument(..., help="JSONL of {model_a, model_b, winner}, e.g. battles.jsonl from judge."),
    rounds: int = typer.Option(1000, "--rounds", min=0, max=100_000, help="Bootstrap rounds for the intervals."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Bootstrap seed."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Arena ratings: Bradley-Terry with 95% bootstrap intervals, and online Elo beside it."""
    from dataclasses import asdict

    from lmstack.eval.arena import arena as rate, read_battles

    table = rate(read_battles(battles), rounds=rounds, seed=seed)
    if json_output:
        typer.echo(json.dumps([asdict(r) for r in table], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = Table("rank", "model", "Bradley-Terry", "95% CI", "Elo", "battles", "wins")
    for i, r in enumerate(table, 1):
        out.add_row(str(i), escape(r.model), f"{r.rating:.1f}", f"{r.lower:.1f} .. {r.upper:.1f}", f"{r.elo:.1f}",
                    str(r.battles), f"{r.wins:g}")
    Console().print(out)


@app.command()
def contamination(
    tasks: str = typer.Option(..., "--tasks", "-t", help="Task names, YAML files or folders."),
    train: str = typer.Option(..., "--train", help="Training data: JSONL/JSON/CSV/Parquet/TXT or lmstack:NAME."),
    ngram: int = typer.Option(8, "--ngram", "-n", min=1, max=64, help="Words per n-gram."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """N-gram overlap between tasks' documents and a training dataset, per task."""
    from lmstack.data import dataset_path
    from lmstack.eval.contamination import contamination as overlap
    from lmstack.eval.task import load_tasks
    from lmstack.inputs import check_file

    check_file(dataset_path(train), "training data")
    results = overlap(load_tasks(tasks), train, n=ngram)
    if json_output:
        typer.echo(json.dumps([{**vars(r), "rate": r.rate} for r in results], indent=2))
        return
    for r in results:
        typer.echo(f"{r.task}: {r.contaminated}/{r.documents - r.too_short} documents share a {ngram}-gram "
                   f"({r.rate:.1%}; mean overlap {r.mean_overlap:.1%}; {r.too_short} too short to test)"
                   + (f"; e.g. documents {r.examples}" if r.examples else ""))


@app.command()
def report(
    models: list[str] = typer.Argument(..., help="Models (registry ids, paths or catalog names) to report on."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for report.md, report.html and scores.png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUTPUT folder."),
) -> None:
    """A Markdown and a self-contained HTML report of the models' scores, deltas and verdicts."""
    from lmstack.eval.report import write_report

    folder = write_report(models, output, overwrite=overwrite)
    typer.echo(f"report in {folder / 'report.md'} and {folder / 'report.html'}")


@app.command()
def speed(
    model: str = MODEL,
    adapter: Optional[Path] = ADAPTER,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    new_tokens: int = typer.Option(64, "--new-tokens", min=2, max=4096, help="Tokens to generate per run."),
    repeats: int = typer.Option(3, "--repeats", min=1, max=100, help="Runs; the best counts."),
) -> None:
    """Measure prefill and decode tokens/s (recorded for the leaderboard's speed criterion)."""
    from lmstack.eval.speed import measure_speed

    for key, value in measure_speed(model, adapter=adapter, device=device, dtype=dtype, new_tokens=new_tokens,
                                    repeats=repeats).items():
        typer.echo(f"{key.replace('_', ' ')}: {value:.1f}")


def leaderboard(
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Rank by a weighted matrix, e.g. "
                                          "accuracy=0.5,speed=0.3,size=0.2 (criteria: accuracy, speed, size, judge "
                                          "or any metric name)."),
    sort: Optional[str] = typer.Option(None, "--sort", "-s", help="Sort by one metric, e.g. lmstack_mc/acc."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only models or only adapters."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every model in the registry with its scores; --weights ranks them for a use."""
    from dataclasses import asdict

    from lmstack.eval.leaderboard import leaderboard as board

    entries = board(weights=weights, sort=sort, kind=kind)
    if json_output:
        typer.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not entries:
        typer.echo("no model has scores yet; run `lmstack eval run MODEL --tasks ...`")
        return
    criteria = list(entries[0].criteria)
    table = Table("#")
    table.add_column("id", no_wrap=True)
    table.add_column("name", overflow="fold")
    for column in ["MB", *(["score", *criteria] if weights else []), *([sort] if sort else [])]:
        table.add_column(column, justify="right")
    table.add_column("scores", min_width=30)
    for i, e in enumerate(entries, 1):
        ranked = [f"{e.total:.3f}", *(f"{e.normalised[c]:.2f}" + (" (missing)" if c in e.missing else "")
                                      for c in criteria)] if weights else []
        size = f"{e.size_bytes / 1e6:.0f}" if e.size_bytes is not None else "-"
        chosen = [f"{e.scores[sort]:.4g}" if sort in e.scores else "-"] if sort else []
        scores = "\n".join(f"{metric} {value:.4g}" for metric, value in sorted(e.scores.items()))
        table.add_row(str(i), e.id, escape(e.name), size, *ranked, *chosen, escape(scores))
    Console().print(table)
