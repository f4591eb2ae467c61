"""`lmstack quant ...`: one command per method, GGUF export, and the quality table of any models.

Each command is a thin call of `lmstack.quant.run.quantize` (or `gguf_export.export_gguf`,
`quality.quality_table`) with the same arguments; torch loads inside the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(help="Quantize a model (int8, int4, NF4, LLM.int8(), SmoothQuant, GPTQ, AWQ) or export GGUF.",
                  no_args_is_help=True)

MODEL = typer.Argument(..., help="Catalog name, GGUF path, HF directory or registry id.")
OUT = typer.Argument(..., help="Output model directory.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a non-empty OUT instead of refusing.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda if available).")
EVAL = typer.Option("lmstack:general_heldout", "--eval", help="Held-out text for the quality table.")
NO_EVAL = typer.Option(False, "--no-eval", help="Skip the quality table (perplexity, KL, decode speed).")
DECODE = typer.Option(64, "--decode-tokens", min=0, max=4096, help="Tokens to time decoding with (0: skip).")
JSON = typer.Option(False, "--json", help="Print JSON.")
HEAD = typer.Option("int8", "--head", help="Output head (and tied embedding): int8, int4 or float.")
GROUP = typer.Option(32, "--group-size", min=8, max=8192, help="Inputs per scale (a multiple of 8).")
CALIB = typer.Option("lmstack:general_calibration", "--calib",
                     help="Calibration text file or dataset (JSONL text/messages), or lmstack:NAME.")
SAMPLES = typer.Option(32, "--samples", min=1, max=4096, help="Calibration windows.")
SEQ_LEN = typer.Option(256, "--seq-len", min=16, max=32768, help="Tokens per calibration window.")
SEARCH = typer.Option(10, "--search", min=0, max=50, help="Clipping candidates per group (0: plain min/max).")


def _run(method: str, model: str, out: Path, overwrite: bool, device: Optional[str], eval_text: str,
         no_eval: bool, decode_tokens: int, json_output: bool, **settings: Any) -> None:
    from lmstack.quant.settings import check_request, parse_settings

    # refused settings and inputs answer before torch is imported
    check_request(out, parse_settings(method=method, **settings), None if no_eval else eval_text, overwrite)
    from lmstack.quant.quality import format_table
    from lmstack.quant.run import quantize

    result = quantize(model, out, method=method, overwrite=overwrite, device=device,
                      eval_text=None if no_eval else eval_text, decode_tokens=decode_tokens, **settings)
    report = result.report
    if json_output:
        typer.echo(json.dumps({"path": str(result.path), "registry_id": result.registry_id, "recipe": report.recipe,
                               "quantized_bytes": report.quantized_bytes, "dense_bytes": report.dense_bytes,
                               "errors": {k: vars(v) for k, v in report.errors.items()},
                               "quality": [row.to_dict() for row in result.quality]}, indent=2))
        return
    typer.echo(f"quantized {report.layers} layers ({report.params / 1e6:.1f}M weights) with {method}: "
               f"{report.dense_bytes / 1e6:.1f} MB of float32 -> {report.quantized_bytes / 1e6:.1f} MB")
    typer.echo("weight error   relative   SQNR dB   max |error|")
    for kind, stats in sorted(report.errors.items(), key=lambda item: item[0] != "all"):
        typer.echo(f"  {kind:<12} {stats.relative:9.5f} {stats.sqnr_db:9.2f} {stats.max_abs:12.6f}")
    if result.quality:
        typer.echo(format_table(result.quality))
    typer.echo(f"saved {result.path} ({result.registry_id})")


@app.command()
def int8(model: str = MODEL, out: Path = OUT,
         scheme: str = typer.Option("absmax", "--scheme", help="absmax (symmetric) or zeropoint (asymmetric)."),
         granularity: str = typer.Option("channel", "--granularity", help="tensor, channel or group."),
         group_size: int = typer.Option(64, "--group-size", min=8, max=8192, help="Inputs per scale with group."),
         head: str = HEAD, overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE, eval_text: str = EVAL,
         no_eval: bool = NO_EVAL, decode_tokens: int = DECODE, json_output: bool = JSON) -> None:
    """Round-to-nearest int8 (absmax or zero-point) per tensor, channel or group."""
    _run("int8", model, out, overwrite, device, eval_text, no_eval, decode_tokens, json_output, scheme=scheme,
         granularity=granularity, group_size=group_size, head=head)


@app.command()
def int4(model: str = MODEL, out: Path = OUT, group_size: int = GROUP, search: int = SEARCH, head: str = HEAD,
         overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE, eval_text: str = EVAL,
         no_eval: bool = NO_EVAL, decode_tokens: int = DECODE, json_output: bool = JSON) -> None:
    """Round-to-nearest 4-bit groups (the baseline GPTQ and AWQ improve on)."""
    _run("int4", model, out, overwrite, device, eval_text, no_eval, decode_tokens, json_output,
         group_size=group_size, search=search, head=head)


@app.command()
def nf4(model: str = MODEL, out: Path = OUT, overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE,
        eval_text: str = EVAL, no_eval: bool = NO_EVAL, decode_tokens: int = DECODE,
        json_output: bool = JSON) -> None:
    """QLoRA's 4-bit NormalFloat with double-quantized scales (the output head stays float)."""
    _run("nf4", model, out, overwrite, device, eval_text, no_eval, decode_tokens, json_output, head="float")


@app.command("llm-int8")
def llm_int8(model: str = MODEL, out: Path = OUT,
             threshold: float = typer.Option(6.0, "--threshold", min=0.001, max=10000.0,
                                             help="Activation magnitude above which a feature stays in float."),
             head: str = HEAD, overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE, eval_text: str = EVAL,
             no_eval: bool = NO_EVAL, decode_tokens: int = DECODE, json_output: bool = JSON) -> None:
    """LLM.int8(): int8 weights and activations, outlier features in float."""
    _run("llm-int8", model, out, overwrite, device, eval_text, no_eval, decode_tokens, json_output,
         threshold=threshold, head=head)


@app.command()
def smoothquant(model: str = MODEL, out: Path = OUT,
                alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Migration strength."),
                calib: str = CALIB, samples: int = SAMPLES, seq_len: int = SEQ_LEN, head: str = HEAD,
                overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE, eval_text: str = EVAL,
                no_eval: bool = NO_EVAL, decode_tokens: int = DECODE, json_output: bool = JSON) -> None:
    """SmoothQuant W8A8: activation outliers migrated into the weights, then int8 x int8."""
    _run("smoothquant", model, out, overwrite, device, eval_text, no_eval, decode_tokens, json_output, alpha=alpha,
         calib=calib, samples=samples, seq_len=seq_len, head=head)


@app.command()
def gptq(model: str = MODEL, out: Path = OUT,
         bits: int = typer.Option(4, "--bits", min=4, max=8, help="4 or 8."), group_size: int = GROUP,
         act_order: bool = typer.Option(True, "--act-order/--no-act-order", help="Most-used inputs first."),
         damp: float = typer.Option(0.01, "--damp", min=0.0, max=1.0, help="Hessian damping, x mean(diag H)."),
         search: int = SEARCH, calib: str = CALIB, samples: int = SAMPLES, seq_len: int = SEQ_LEN, head: str = HEAD,
         overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE, eval_text: str = EVAL,
         no_eval: bool = NO_EVAL, decode_tokens: int = DECODE, json_output: bool = JSON) -> None:
    """GPTQ: error-compensating rounding from calibration inputs."""
    _run("gptq", model, out, overwrite, device, eval_text, no_eval, decode_tokens, json_output, bits=bits,
         group_size=group_size, act_order=act_order, damp=damp, search=search, calib=calib, samples=samples,
         seq_len=seq_len, head=head)


@app.command()
def awq(model: str = MODEL, out: Path = OUT,
        bits: int = typer.Option(4, "--bits", min=4, max=8, help="4 or 8."), group_size: int = GROUP,
        search: int = SEARCH, calib: str = CALIB, samples: int = SAMPLES, seq_len: int = SEQ_LEN, head: str = HEAD,
        overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE, eval_text: str = EVAL,
        no_eval: bool = NO_EVAL, decode_tokens: int = DECODE, json_output: bool = JSON) -> None:
    """AWQ: activation-aware channel scaling and clipping, then rounding."""
    _run("awq", model, out, overwrite, device, eval_text, no_eval, decode_tokens, json_output, bits=bits,
         group_size=group_size, search=search, calib=calib, samples=samples, seq_len=seq_len, head=head)


@app.command()
def gguf(model: str = MODEL, out_dir: Path = typer.Argument(..., help="Folder for <model>-<type>.gguf files."),
         types: list[str] = typer.Option(..., "--type", "-t", help="f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 "
                                         "q4_k_s q4_k_m q5_k_s q5_k_m q6_k (repeat for several)."),
         method: str = typer.Option("rtn", "--method", help="rtn (llama.cpp's rounding), gptq or awq."),
         calib: str = CALIB, samples: int = SAMPLES, seq_len: int = SEQ_LEN,
         damp: float = typer.Option(0.01, "--damp", min=0.0, max=1.0, help="GPTQ Hessian damping."),
         act_order: bool = typer.Option(True, "--act-order/--no-act-order", help="GPTQ column order."),
         overwrite: bool = OVERWRITE, device: Optional[str] = DEVICE, json_output: bool = JSON) -> None:
    """Export GGUF files llama.cpp and Ollama run, one per type."""
    from lmstack.quant.gguf_export import export_gguf

    exports = export_gguf(model, out_dir, types, method=method, calib=calib, samples=samples, seq_len=seq_len,
                          damp=damp, act_order=act_order, overwrite=overwrite, device=device)
    if json_output:
        typer.echo(json.dumps([{"type": e.type, "path": str(e.path), "registry_id": e.registry_id,
                                "tensor_types": e.tensor_types} for e in exports], indent=2))
        return
    for e in exports:
        mix = ", ".join(f"{count} {name}" for name, count in sorted(e.tensor_types.items()))
        typer.echo(f"{e.path} ({e.path.stat().st_size / 1e6:.1f} MB; {mix}) {e.registry_id}")


@app.command()
def compare(reference: str = typer.Argument(..., help="The unquantized model."),
            models: list[str] = typer.Argument(..., help="Quantized models (lmstack directories or GGUF files)."),
            eval_text: str = EVAL, decode_tokens: int = DECODE, device: Optional[str] = DEVICE,
            json_output: bool = JSON) -> None:
    """The quality table: size, perplexity, KL vs REFERENCE, decode tokens/s."""
    from lmstack.quant.quality import compare_models, format_table

    rows = compare_models(reference, models, eval_text, decode_tokens=decode_tokens, device=device)
    typer.echo(json.dumps([row.to_dict() for row in rows], indent=2) if json_output else format_table(rows))
