"""`lmstack abliterate MODEL OUT`: remove a model's refusal direction and report what it changed."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

def abliterate(
    model: str = typer.Argument(..., help="Catalog name, GGUF path, HF directory or registry id."),
    out: str = typer.Argument(..., help="Output folder: the edited model (weights) or the direction (hooks)."),
    method: str = typer.Option("weights", "--method", help="weights: orthogonalise the weights and save a model; "
                                                           "hooks: save the direction for ablation at inference."),
    train: str = typer.Option("lmstack:refusal_train", "--train", help="JSONL of {prompt, harmful}: directions."),
    val: str = typer.Option("lmstack:refusal_val", "--val", help="JSONL of {prompt, harmful}: choosing a direction."),
    heldout: str = typer.Option("lmstack:refusal_heldout", "--heldout", help="JSONL of {prompt, harmful}: the report."),
    text: str = typer.Option("lmstack:general_heldout", "--text", help="Text for perplexity before and after."),
    layer: Optional[List[int]] = typer.Option(None, "--layer", min=1, help="A candidate layer (repeat for several; "
                                                                           "default: up to 8 in the middle)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, max=512, help="Tokens per answer judged."),
    marker: Optional[List[str]] = typer.Option(None, "--marker", help="A phrase that marks a refusal (repeat; "
                                                                      "default: I'm sorry, I can't, ...)."),
    max_kl: float = typer.Option(0.1, "--max-kl", min=0.0, max=100.0, help="Pass over directions that move harmless "
                                                                           "next-token distributions by more (KL)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda if available)."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 (exact edits), bf16 or fp16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT folder instead of refusing."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Abliterate: find the refusal direction (difference of means), remove it, report refusals and perplexity."""
    from lmstack.inputs import check_text
    from lmstack.interp.prompts import REFUSAL_MARKERS, check_inputs

    markers = tuple(check_text(m, "refusal marker").lower() for m in marker) if marker else REFUSAL_MARKERS
    check_inputs(out, method=method, prompt_sets={"train": train, "val": val, "heldout": heldout}, text=text,
                 max_new_tokens=max_new_tokens, markers=markers, overwrite=overwrite)  # before torch loads
    from lmstack.interp.abliterate import abliterate as run

    report = run(model, out, method=method, train=train, val=val, heldout=heldout, text=text, layers=layer or None,
                 max_new_tokens=max_new_tokens, markers=markers, max_kl=max_kl, device=device, dtype=dtype,
                 overwrite=overwrite, progress=None if json_output else lambda line: typer.echo(f"  candidate {line}", err=True))
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    typer.echo(f"direction from layer {report.layer}; {report.method} -> {report.path}")
    typer.echo(f"{'':24}{'before':>10}{'after':>10}")
    for label, key, form in (("refusals (held-out)", "refusal_rate", "{:.0%}"),
                             ("over-refusals", "over_refusal_rate", "{:.0%}"), ("perplexity", "perplexity", "{:.2f}")):
        before, after = getattr(report.before, key), getattr(report.after, key)
        typer.echo(f"{label:24}{form.format(before):>10}{form.format(after):>10}")
