"""`lmstack generate` and `lmstack chat`: thin calls of `generate_text` and the chat session."""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

MODEL_HELP = "Catalog name, GGUF path, HF directory, adapter directory or registry id."
# Sampling flags shared by `generate` and `chat`.
TEMPERATURE = typer.Option(None, "--temperature", "-t", help="0 = greedy (the default).")
TOP_K = typer.Option(None, "--top-k", help="Sample from the k most likely tokens (0 = off).")
TOP_P = typer.Option(None, "--top-p", help="Nucleus: the likeliest tokens adding up to p.")
MIN_P = typer.Option(None, "--min-p", help="Drop tokens under min_p x the top probability.")
REPETITION_PENALTY = typer.Option(None, "--repetition-penalty", help="> 1 discourages repeats.")
NUM_BEAMS = typer.Option(None, "--num-beams", help="> 1 runs beam search.")
LENGTH_PENALTY = typer.Option(None, "--length-penalty", help="Beam search: > 0 favours long.")
SEED = typer.Option(None, "--seed", help="Make sampling reproducible.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: auto).")
TEMPLATE = typer.Option(None, "--template", help="Chat template to use instead of the model's: chatml, alpaca, llama3, gemma.")
DTYPE = typer.Option(None, "--dtype", help="fp32 (CPU default, exact), bf16 (GPU default; faster decode on CPUs with AVX-512 BF16), fp16.")


def generate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: Optional[str] = typer.Argument(None, help="The prompt; omit it or give '-' to read stdin."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", "-n", help="Most new tokens to generate."),
    temperature: Optional[float] = TEMPERATURE,
    top_k: Optional[int] = TOP_K,
    top_p: Optional[float] = TOP_P,
    min_p: Optional[float] = MIN_P,
    repetition_penalty: Optional[float] = REPETITION_PENALTY,
    num_beams: Optional[int] = NUM_BEAMS,
    length_penalty: Optional[float] = LENGTH_PENALTY,
    seed: Optional[int] = SEED,
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop at this text (repeatable)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt (chat template only)."),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as is, without the chat template."),
    explain: bool = typer.Option(False, "--explain", help="Show each step's top candidates and the pick."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Print the text at the end, not as it comes."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    template: Optional[str] = TEMPLATE,
) -> None:
    """Generate text from a prompt, streamed as it is made; speed goes to stderr."""
    from lmstack.generate.text import generate_text

    text = prompt if prompt not in (None, "-") else sys.stdin.read()
    loaded = load_for_generation(model, device, dtype, template)
    streaming = not (no_stream or json_output)
    result = generate_text(
        loaded, text, system=system, raw=raw, stream=streaming, explain=explain, max_new_tokens=max_new_tokens,
        stop=stop or None, seed=seed, **_sampling(temperature, top_k, top_p, min_p, repetition_penalty, num_beams,
                                                   length_penalty),
    )
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    typer.echo("" if streaming else result.text)
    if explain:
        from rich.console import Console

        from lmstack.generate.text import explanation_table

        Console().print(explanation_table(result))
    typer.echo(speed_line(result), err=True)


def chat(
    model: str = typer.Argument(..., help=MODEL_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", "-n", help="Most new tokens per reply."),
    temperature: Optional[float] = TEMPERATURE,
    top_k: Optional[int] = TOP_K,
    top_p: Optional[float] = TOP_P,
    min_p: Optional[float] = MIN_P,
    repetition_penalty: Optional[float] = REPETITION_PENALTY,
    num_beams: Optional[int] = NUM_BEAMS,
    length_penalty: Optional[float] = LENGTH_PENALTY,
    seed: Optional[int] = SEED,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    template: Optional[str] = TEMPLATE,
) -> None:
    """Chat with a model in the terminal; /help lists commands, Ctrl-D leaves."""
    from lmstack.generate.repl import ChatSession, run_chat

    loaded = load_for_generation(model, device, dtype, template)
    session = ChatSession(
        loaded, system=system, max_new_tokens=max_new_tokens, seed=seed,
        **_sampling(temperature, top_k, top_p, min_p, repetition_penalty, num_beams, length_penalty),
    )
    run_chat(session)


def load_for_generation(model: str, device: str | None, dtype: str | None, template: str | None) -> Any:
    import lmstack

    loaded = lmstack.load(model, device=device, dtype=dtype)
    if template:
        loaded.tokenizer.chat_template = template  # a built-in name or Jinja source
    return loaded


def speed_line(result: Any) -> str:
    return (
        f"prefill: {result.prompt_tokens} tokens in {result.prefill_seconds:.2f} s "
        f"({result.prefill_tokens_per_second:.1f} tok/s) | decode: {result.new_tokens} tokens in "
        f"{result.decode_seconds:.2f} s ({result.decode_tokens_per_second:.1f} tok/s) | finish: {result.finish_reason}"
    )


def _sampling(temperature, top_k, top_p, min_p, repetition_penalty, num_beams, length_penalty) -> dict[str, Any]:
    """The sampling flags the user set (unset ones come from the model's generation config)."""
    flags = dict(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, num_beams=num_beams, length_penalty=length_penalty,
    )
    return {key: value for key, value in flags.items() if value is not None}
