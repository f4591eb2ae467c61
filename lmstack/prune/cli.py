"""`lmstack prune MODEL OUT`: structured pruning (layers, heads, MLP channels) with a quality table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def prune(
    model: str = typer.Argument(..., help="Catalog name, GGUF path, HF directory or registry id."),
    out: Path = typer.Argument(..., help="The pruned model directory to write."),
    layers: int = typer.Option(0, "--layers", min=0, max=1024, help="Layers to drop (lowest block influence)."),
    heads_per_group: int = typer.Option(0, "--heads-per-group", min=0, max=1024,
                                        help="Query heads to remove from each key-value group of every layer."),
    mlp_fraction: float = typer.Option(0.0, "--mlp-fraction", min=0.0, max=0.99,
                                       help="Share of MLP channels to remove from every layer."),
    calibration: str = typer.Option("lmstack:general_heldout", "--calibration",
                                    help="Text that importance is measured on (file, folder or lmstack:NAME)."),
    eval_text: str = typer.Option("lmstack:general_heldout", "--eval", help="Text file the perplexity is measured on."),
    max_len: int = typer.Option(256, "--max-len", min=8, max=65536, help="Tokens per calibration window."),
    heal_data: Optional[str] = typer.Option(None, "--heal-data", help="Text for a short healing fine-tune."),
    heal_steps: int = typer.Option(0, "--heal-steps", min=0, max=1_000_000, help="Healing steps (0: none)."),
    heal_lr: float = typer.Option(5e-5, "--heal-lr", min=1e-8, max=1.0, help="Healing learning rate."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT instead of refusing."),
) -> None:
    """Prune a model's layers, attention heads and MLP channels by importance; print the quality table."""
    from lmstack.prune.run import prune_model

    report = prune_model(model, out, layers=layers, heads_per_group=heads_per_group, mlp_fraction=mlp_fraction,
                         calibration=calibration, eval_text=eval_text, max_len=max_len, heal_data=heal_data,
                         heal_steps=heal_steps, heal_lr=heal_lr, overwrite=overwrite)
    if report.dropped_layers:
        typer.echo(f"dropped layers {report.dropped_layers}")
    typer.echo(report.table())
    typer.echo(f"pruned model written to {report.output}")
