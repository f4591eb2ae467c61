"""`lmstack train ...`: fine-tune, align, sample preference pairs, merge adapters.

Recipe keys are overridden after the recipe path: `lmstack train sft recipe.yaml --lr 1e-4 --steps 50`.
Under `torchrun --nproc_per_node N -m lmstack.cli train sft ...` the run is data parallel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Fine-tune (SFT: full, LoRA, DoRA, QLoRA) and align (DPO, IPO, cDPO, KTO, ORPO).",
                  no_args_is_help=True)

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
RESUME = typer.Option(False, "--resume", help="Continue exactly from the run's last checkpoint.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a non-empty run.out_dir instead of refusing.")


def _report(kind: str, output, metrics: dict) -> None:
    from rich.console import Console

    shown = {k: round(v, 4) for k, v in metrics.items() if k in ("loss", "val_loss", "accuracy", "reward_margin")}
    Console().print(f"[green]{kind} saved to {output}[/green]  " + "  ".join(f"{k} {v}" for k, v in shown.items()))


def _train(recipe: Path, overrides: list[str], resume: bool, overwrite: bool, losses: tuple[str, ...],
           other_command: str) -> None:
    """Load the recipe with its overrides, refuse a loss this command does not train, run it."""
    from lmstack.errors import LmstackError
    from lmstack.train.recipe import load_recipe
    from lmstack.train.run import train_recipe

    loaded_recipe = load_recipe(recipe, overrides)
    if loaded_recipe.objective.loss not in losses:
        raise LmstackError(f"the recipe's objective.loss is {loaded_recipe.objective.loss}; "
                           f"use `lmstack train {other_command}` or pass --loss {'|'.join(losses)}")
    result = train_recipe(loaded_recipe, resume=resume, overwrite=overwrite)
    if result.output:
        _report(f"{loaded_recipe.objective.loss} result", result.output, result.train.metrics)


@app.command(context_settings=OVERRIDES)
def sft(ctx: typer.Context, recipe: Path = typer.Argument(..., help="YAML recipe, e.g. recipes/sft-lora-smollm2.yaml"),
        resume: bool = RESUME, overwrite: bool = OVERWRITE) -> None:
    """Supervised fine-tuning on chat data (assistant tokens only). Extra --key value pairs override the recipe."""
    _train(recipe, ctx.args, resume, overwrite, ("sft",), "dpo")


@app.command(context_settings=OVERRIDES)
def dpo(ctx: typer.Context, recipe: Path = typer.Argument(..., help="YAML recipe, e.g. recipes/dpo-lora-smollm2.yaml"),
        loss: Optional[str] = typer.Option(None, help="sigmoid (DPO) | ipo | cdpo | kto | orpo; default: the recipe's"),
        resume: bool = RESUME, overwrite: bool = OVERWRITE) -> None:
    """Preference alignment: DPO and its variants. Extra --key value pairs override the recipe."""
    _train(recipe, ctx.args + (["--loss", loss] if loss else []), resume, overwrite,
           ("sigmoid", "ipo", "cdpo", "kto", "orpo"), "sft")


@app.command()
def reject(
    model: str = typer.Argument(..., help="The model that answers (catalog name, path or registry id)."),
    prompts: str = typer.Argument(..., help="Prompt file (prompt or messages records) or lmstack:NAME."),
    out: Path = typer.Argument(..., help="Where to write the {prompt, chosen, rejected} JSONL."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT file instead of refusing."),
    scorer: str = typer.Option(..., help="regex:PATTERN | python:module:function | judge:MODEL"),
    num_samples: int = typer.Option(4, "--num-samples", "-n", help="Answers sampled per prompt."),
    temperature: float = typer.Option(0.8),
    top_p: float = typer.Option(0.95),
    max_new_tokens: int = typer.Option(256),
    seed: int = typer.Option(0),
) -> None:
    """Rejection sampling: sample N answers per prompt, keep the best and worst as a preference pair."""
    from lmstack.train.rejection import rejection_sample

    report = rejection_sample(model, prompts, out, scorer=scorer, num_samples=num_samples, temperature=temperature,
                              top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                              overwrite=overwrite)
    typer.echo(f"{report.pairs} pairs from {report.prompts} prompts written to {report.output}")


@app.command("merge-adapter")
def merge_adapter(
    base: str = typer.Argument(..., help="The base model the adapter was trained on."),
    adapter: Path = typer.Argument(..., help="The adapter directory (adapter_config.json, adapter_model.safetensors)."),
    out: Path = typer.Argument(..., help="The merged model directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT instead of refusing."),
) -> None:
    """Fold a LoRA/DoRA adapter into its base model and write a full model directory."""
    from lmstack.train.merge import merge_adapter as merge

    typer.echo(f"merged model written to {merge(base, adapter, out, overwrite=overwrite)}")
