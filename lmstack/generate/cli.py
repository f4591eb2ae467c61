"""`lmstack generate` and `lmstack chat`: thin calls of `generate_text` and the chat session."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from typing import Any, Callable, Optional

import typer

MODEL_HELP = "Catalog name, GGUF path, HF directory, adapter directory or registry id."
# The sampling flags `generate` and `chat` share: name -> (type, option). They reach a command as
# one dict, `sampling`, holding only the flags the user set (unset ones come from the model);
# SamplingConfig checks their ranges before the model loads.
SAMPLING_FLAGS: dict[str, tuple[type, Any]] = {
    "temperature": (float, typer.Option(None, "--temperature", "-t", help="0 = greedy (the default).")),
    "top_k": (int, typer.Option(None, "--top-k", help="Sample from the k most likely tokens (0 = off).")),
    "top_p": (float, typer.Option(None, "--top-p", help="Nucleus: the likeliest tokens adding up to p.")),
    "min_p": (float, typer.Option(None, "--min-p", help="Drop tokens under min_p x the top probability.")),
    "repetition_penalty": (float, typer.Option(None, "--repetition-penalty", help="> 1 discourages repeats.")),
    "num_beams": (int, typer.Option(None, "--num-beams", help="> 1 runs beam search.")),
    "length_penalty": (float, typer.Option(None, "--length-penalty", help="Beam search: > 0 favours long.")),
}
SEED = typer.Option(None, "--seed", min=0, max=2**63 - 1, help="Make sampling reproducible.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: auto).")
TEMPLATE = typer.Option(None, "--template", help="Chat template to use instead of the model's: chatml, alpaca, llama3, gemma, or Jinja source.")
DTYPE = typer.Option(None, "--dtype", help="auto (default: bf16 where the hardware computes it natively, else fp32), fp32, bf16, fp16.")


def sampling_flags(command: Callable) -> Callable:
    """Give a command the sampling flags; it receives the ones the user set as `sampling`."""
    signature = inspect.signature(command)
    kept = [p for p in signature.parameters.values() if p.name != "sampling"]
    flags = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])
             for name, (kind, option) in SAMPLING_FLAGS.items()]

    @functools.wraps(command)
    def with_sampling(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in SAMPLING_FLAGS}
        return command(**kwargs, sampling={k: v for k, v in values.items() if v is not None})

    with_sampling.__signature__ = signature.replace(parameters=kept + flags)
    return with_sampling


@sampling_flags
def generate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: Optional[str] = typer.Argument(None, help="The prompt; omit it or give '-' to read stdin."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", "-n", min=1, help="Most new tokens to generate."),
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
    sampling: dict[str, Any] = None,
) -> None:
    """Generate text from a prompt, streamed as it is made; speed goes to stderr."""
    from lmstack.api import load
    from lmstack.generate.text import generate_text
    from lmstack.inputs import check_text, read_stdin

    text = check_text(prompt, "prompt") if prompt not in (None, "-") else read_stdin("prompt")
    check_settings(sampling, template)
    loaded = load(model, device=device, dtype=dtype)
    streaming = not (no_stream or json_output)
    result = generate_text(
        loaded, text, system=system, raw=raw, template=template, stream=streaming, explain=explain,
        max_new_tokens=max_new_tokens, stop=stop or None, seed=seed, **sampling,
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


@sampling_flags
def chat(
    model: str = typer.Argument(..., help=MODEL_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", "-n", min=1, help="Most new tokens per reply."),
    seed: Optional[int] = SEED,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
    template: Optional[str] = TEMPLATE,
    sampling: dict[str, Any] = None,
) -> None:
    """Chat with a model in the terminal; /help lists commands, Ctrl-D leaves."""
    from lmstack.api import load
    from lmstack.errors import LmstackError
    from lmstack.generate.repl import ChatSession, run_chat

    if sys.stdin is None or sys.stdin.closed:
        raise LmstackError("chat reads your messages from standard input, which is closed; run it in a terminal")
    check_settings(sampling, template)
    loaded = load(model, device=device, dtype=dtype)
    session = ChatSession(loaded, system=system, template=template, max_new_tokens=max_new_tokens, seed=seed,
                          **sampling)
    run_chat(session)


def check_settings(sampling: dict[str, Any], template: str | None) -> None:
    """Sampling values and the template name are checked before the model loads (which takes seconds)."""
    from lmstack.generate.processors import SamplingConfig
    from lmstack.tokenizer.chat_template import resolve_template

    SamplingConfig().updated(**sampling)
    if template is not None:
        resolve_template(template)


def speed_line(result: Any) -> str:
    return (
        f"prefill: {result.prompt_tokens} tokens in {result.prefill_seconds:.2f} s "
        f"({result.prefill_tokens_per_second:.1f} tok/s) | decode: {result.new_tokens} tokens in "
        f"{result.decode_seconds:.2f} s ({result.decode_tokens_per_second:.1f} tok/s) | finish: {result.finish_reason}"
    )
