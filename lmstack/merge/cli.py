"""`lmstack merge CONFIG.yaml OUT`: a mergekit-style merge (or a mixture of experts) into a model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def merge(
    config: Path = typer.Argument(..., help="A mergekit YAML config (merge_method + models or slices), or a "
                                            "mergekit-moe config (base_model + experts)."),
    out: Path = typer.Argument(..., help="Output model folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT folder instead of refusing."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed for DARE's drops and random routers."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the arithmetic runs: cpu, cuda, cuda:N "
                                                                "(default: cuda if available)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Merge models as a mergekit config says: linear, slerp, task_arithmetic, ties, dare_linear, dare_ties,
    model_stock, passthrough (layer slices), or a mixture of experts; streamed one tensor at a time."""
    from rich.progress import Progress

    from lmstack.home import check_output
    from lmstack.merge.config import load_config

    check_output(out, overwrite=overwrite)
    merge_config = load_config(config)  # file, YAML and schema errors before torch is even imported
    from lmstack.merge.run import merge as run_merge

    with Progress(transient=True, disable=json_output) as bar:
        task = bar.add_task("merging", total=None)
        result = run_merge(merge_config, out, overwrite=overwrite, seed=seed, device=device,
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
    if json_output:
        typer.echo(json.dumps({"path": str(result.path), "registry_id": result.registry_id, "method": result.method,
                               "tensors": result.tensors, "parents": result.parents}))
    else:
        typer.echo(f"{result.method}: {result.tensors} tensors written to {result.path} ({result.registry_id}, "
                   f"parents {', '.join(result.parents)})")
