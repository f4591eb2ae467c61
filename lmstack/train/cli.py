"""`lmstack train ...`: fine-tune, align, sample preference pairs, merge adapters.

Recipe keys are overridden after the recipe path: `lmstack train sft recipe.yaml --lr 1e-4 --steps 50`.
Under `torchrun --nproc_per_node N -m lmstack.cli train sft ...` the run is data parallel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Pre-train, fine-tune (SFT: full, LoRA, DoRA, QLoRA), align (DPO, IPO, cDPO, KTO, ORPO), distill.",
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


@app.command(context_settings=OVERRIDES)
def pretrain(
    ctx: typer.Context,
    recipe: Optional[Path] = typer.Argument(None, help="Optional YAML recipe; the flags alone make a run."),
    data: Optional[str] = typer.Option(None, "--data", help="Corpus: text files, a folder, JSONL, Parquet, or shards."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer folder (`lmstack tokenizer train`)."),
    depth: Optional[int] = typer.Option(None, "--depth", min=1, max=256, help="Layers; width, heads and lr follow."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=10_000_000, help="Optimizer steps."),
    out_dir: Optional[str] = typer.Option(None, "--out-dir", help="Run folder (the model lands in OUT_DIR/model)."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Depths to compare on the same data, e.g. 2,3,4: "
                                                              "a loss-vs-compute power law, plotted."),
    resume: bool = RESUME, overwrite: bool = OVERWRITE,
) -> None:
    """Pre-train a Llama-style model from raw text (from scratch with --depth, else continue model.ref)."""
    from lmstack.errors import LmstackError
    from lmstack.pretrain.recipe import check_inputs, with_defaults
    from lmstack.train.recipe import load_recipe

    args = ctx.args
    if recipe is not None and str(recipe).startswith("--"):  # no recipe: click took the first override's key
        recipe, args = None, [str(recipe), *args]
    flags = {"data.train": data, "model.tokenizer": tokenizer, "model.depth": depth, "run.steps": steps,
             "run.out_dir": out_dir}
    overrides = {**_override_dict(args), **{k: v for k, v in flags.items() if v is not None}}
    loaded = load_recipe(recipe, {**overrides, "objective.loss": "pretrain"})
    if not sizes:
        check_inputs(with_defaults(loaded))  # before torch and the trainer load: bad input fails at once
    from lmstack.pretrain.run import pretrain as run_pretrain
    from lmstack.pretrain.run import pretrain_sizes

    if sizes:
        try:
            depths = [int(part) for part in sizes.split(",")]
        except ValueError:
            raise LmstackError(f"--sizes {sizes!r} is not a list of depths; write e.g. --sizes 2,3,4") from None
        for result in pretrain_sizes(loaded, depths, overwrite=overwrite):
            typer.echo(f"d{result.depth}: {result.flops:.3g} FLOPs, {result.summary()}")
        typer.echo(f"loss-vs-compute fit and plot in {loaded.run.out_dir}/scaling.json, scaling.png")
        return
    result = run_pretrain(loaded, resume=resume, overwrite=overwrite)
    if result is not None:  # None on torchrun's other processes
        typer.echo(result.summary())


def _override_dict(tokens: list[str]) -> dict:
    from lmstack.train.recipe import parse_override_tokens

    return parse_override_tokens(tokens)


@app.command(context_settings=OVERRIDES)
def distill(ctx: typer.Context,
            recipe: Path = typer.Argument(..., help="YAML recipe with objective.teacher, e.g. recipes/distill-smollm2.yaml"),
            resume: bool = RESUME, overwrite: bool = OVERWRITE) -> None:
    """Knowledge distillation: a student learns a teacher's next-token distributions (KL + cross-entropy)."""
    _train(recipe, ctx.args + ["--objective.loss", "distill"], resume, overwrite, ("distill",), "sft")


@app.command()
def landscape(
    model: str = typer.Argument(..., help="A trained model (folder, catalog name or registry id)."),
    data: str = typer.Argument(..., help="Text to measure the loss on: a corpus, text file or shard folder."),
    out: Path = typer.Argument(..., help="The PNG to write (a JSON of the grid is written beside it)."),
    points: int = typer.Option(11, "--points", min=3, max=51, help="Grid points along each direction."),
    span: float = typer.Option(1.0, "--span", min=0.01, max=10.0, help="The grid covers -span..span."),
    windows: int = typer.Option(8, "--windows", min=1, max=1024, help="Sequences the loss averages over."),
    max_len: int = typer.Option(256, "--max-len", min=2, max=65536, help="Tokens per sequence."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT instead of refusing."),
) -> None:
    """Plot the loss around a trained model along two random filter-normalised directions."""
    from lmstack.pretrain.landscape import loss_landscape

    result = loss_landscape(model, data, out, points=points, span=span, windows=windows, max_len=max_len,
                            seed=seed, overwrite=overwrite)
    typer.echo(f"loss at the model {result.center_loss:.4f}, grid min {result.min_loss:.4f}, "
               f"max {result.max_loss:.4f} -> {out}")
