"""`lmstack agent ...`: tool-using agents, text-to-SQL, prompt optimisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Agents: a ReAct loop with tools, text-to-SQL, prompt optimisation.", no_args_is_help=True)

MODEL = typer.Option("smollm2-135m-instruct", "--model", "-m",
                     help="The LLM: an lmstack model reference, or openai:URL#MODEL for an endpoint.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda if available).")
JSON = typer.Option(False, "--json", help="Print JSON.")


@app.command()
def run(
    task: str = typer.Argument(..., help="What the agent should do."),
    model: str = MODEL,
    tools: List[str] = typer.Option(["calculator"], "--tools", "-t",
                                    help="calculator, search, sql, python (repeat, or comma-separated)."),
    index: Optional[str] = typer.Option(None, "--index", help="The index the search tool reads."),
    db: Optional[Path] = typer.Option(None, "--db", help="The SQLite database the sql tool reads (read-only)."),
    max_steps: int = typer.Option(8, "--max-steps", min=1, max=100, help="Tool calls at most."),
    max_seconds: float = typer.Option(120.0, "--max-seconds", min=1.0, max=86_400.0, help="Wall-clock limit."),
    python_timeout: float = typer.Option(10.0, "--python-timeout", min=0.5, max=600.0, help="Seconds per python run."),
    python_memory: int = typer.Option(512, "--python-memory", min=64, max=65_536, help="MiB per python run."),
    device: Optional[str] = DEVICE,
    json_output: bool = JSON,
) -> None:
    """Solve TASK with a ReAct loop, printing each thought, tool call and observation."""
    from lmstack.agents.react import run_agent
    from lmstack.agents.tools import make_tools
    from lmstack.inputs import check_text
    from lmstack.hub.llm import load_llm

    check_text(task, "task")
    names = [name.strip() for item in tools for name in item.split(",") if name.strip()]
    toolset = make_tools(names, index=index, database=str(db) if db else None, python_timeout=python_timeout,
                         python_memory_mb=python_memory)
    llm = load_llm(model, device=device)

    def show(step) -> None:
        if json_output:
            return
        typer.secho(f"Thought: {step.thought}", fg="cyan")
        if step.action:
            typer.secho(f"Action: {step.action} {json.dumps(step.arguments, ensure_ascii=False)}", fg="yellow")
        typer.echo(f"Observation: {step.observation}")

    result = run_agent(llm, task, toolset, max_steps=max_steps, max_seconds=max_seconds, on_step=show)
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif result.answer is not None:
        typer.secho(f"Final Answer: {result.answer}", fg="green")
    else:
        typer.echo(f"no final answer: the {'step' if result.stopped == 'steps' else 'time'} limit was reached")


@app.command()
def sql(
    db: Path = typer.Argument(..., help="A SQLite database (opened read-only)."),
    question: str = typer.Argument(..., help="A question about the data, or a SELECT query with --raw."),
    model: str = MODEL,
    raw: bool = typer.Option(False, "--raw", help="QUESTION is SQL: run it as is (read-only)."),
    max_rows: int = typer.Option(50, "--max-rows", min=1, max=100_000, help="Rows shown at most."),
    device: Optional[str] = DEVICE,
    json_output: bool = JSON,
) -> None:
    """Text-to-SQL: the model writes a SELECT from the schema; it runs on a read-only connection."""
    from lmstack.agents.sql import format_rows, open_read_only, run_query, text_to_sql
    from lmstack.hub.llm import load_llm

    if raw:
        connection = open_read_only(db)
        try:
            columns, rows = run_query(connection, question, max_rows)
        finally:
            connection.close()
        result = {"sql": question, "columns": columns, "rows": [list(row) for row in rows]}
    else:
        open_read_only(db).close()  # a bad database is reported before the model loads
        result = text_to_sql(load_llm(model, device=device), question, db, max_rows)
    if json_output:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        typer.echo(f"SQL: {result['sql']}\n{format_rows(result['columns'], result['rows'])}")


@app.command()
def optimize(
    train: Path = typer.Argument(..., help="JSONL of {input, output}: the pool of few-shot examples."),
    dev: Path = typer.Argument(..., help="JSONL of {input, output}: the set that picks the best program."),
    model: str = MODEL,
    instruction: List[str] = typer.Option(..., "--instruction", "-i", help="A starting instruction (repeatable)."),
    shots: int = typer.Option(3, "--shots", min=0, max=32, help="Demonstrations per prompt."),
    trials: int = typer.Option(4, "--trials", min=0, max=100, help="Random demo sets tried per instruction."),
    propose: int = typer.Option(0, "--propose", min=0, max=10, help="Instructions the model proposes as well."),
    metric: str = typer.Option("exact", "--metric", help="exact or contains."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the demo sampling."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the best program here (JSON)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    device: Optional[str] = DEVICE,
    json_output: bool = JSON,
) -> None:
    """Choose the instruction and few-shot examples that maximise METRIC on DEV; report before/after."""
    from lmstack.agents.optimize import optimize as run_optimize
    from lmstack.agents.optimize import read_examples
    from lmstack.home import atomic_write_text, check_output
    from lmstack.hub.llm import load_llm

    if out is not None:
        check_output(out, overwrite=overwrite, directory=False)
    train_rows, dev_rows = read_examples(train), read_examples(dev)
    report = run_optimize(load_llm(model, device=device), train_rows, dev_rows, list(instruction), shots=shots,
                          trials=trials, propose=propose, metric=metric, seed=seed)
    if out is not None:
        atomic_write_text(out, json.dumps(report["program"], indent=2, ensure_ascii=False))
    if json_output:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        typer.echo(f"{metric} on dev: before {report['before']:.3f}, after {report['after']:.3f} "
                   f"({report['candidates']} programs tried)")
        typer.echo(f"instruction: {report['program']['instruction']}\ndemos: {len(report['program']['demos'])}")
