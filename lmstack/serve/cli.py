"""`lmstack serve MODEL`: a thin typer layer over `lmstack.serve.server.serve`."""

from __future__ import annotations

from typing import Optional

import typer

from lmstack.generate.cli import DEVICE, DTYPE, TEMPLATE


def serve(
    model: str = typer.Argument(..., help="Catalog name, GGUF path, HF directory or registry id."),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", help="NAME=PATH: serve a PEFT adapter under "
                                                "NAME (choose it by naming it as `model`); repeatable."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require this key (Authorization: Bearer KEY); "
                                          "default: $LMSTACK_API_KEY, else no key."),
    served_name: Optional[str] = typer.Option(None, "--served-name", help="The model's id in the API "
                                              "(default: MODEL as given)."),
    max_sequences: int = typer.Option(32, "--max-sequences", min=1, max=4096,
                                      help="Sequences generating at once (each of n choices counts)."),
    max_waiting: int = typer.Option(256, "--max-waiting", min=0, max=100_000,
                                    help="Requests that may wait for room; more get 429."),
    queue_timeout: float = typer.Option(60.0, "--queue-timeout", min=0.1, max=3600,
                                        help="Seconds a request may wait for room before a 503."),
    max_context: Optional[int] = typer.Option(None, "--max-context", min=2, max=1_048_576,
                                              help="Prompt + answer tokens per request (default: the model's)."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", min=0.001, max=1024, help="Largest request body."),
    kv_cache_mb: float = typer.Option(1024.0, "--kv-cache-mb", min=1, max=1_048_576, help="KV cache memory."),
    template: Optional[str] = TEMPLATE,
    device: Optional[str] = DEVICE,
    dtype: Optional[str] = DTYPE,
) -> None:
    """Serve a model over the OpenAI API (chat, completions, embeddings) with a web UI at /ui/."""
    from lmstack.serve.limits import Limits
    from lmstack.serve.server import parse_adapters
    from lmstack.serve.server import serve as run_server

    adapters = parse_adapters(adapter or [])
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), max_sequences=max_sequences, max_waiting=max_waiting,
                    queue_timeout=queue_timeout, max_context=max_context)
    run_server(model, adapters=adapters, host=host, port=port, api_key=api_key, limits=limits,
               kv_cache_mb=kv_cache_mb, template=template, device=device, dtype=dtype, served_name=served_name)
