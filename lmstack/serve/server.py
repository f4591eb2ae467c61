"""`serve`: load a model (and its adapters), start the engine and answer HTTP with uvicorn.

    serve("smollm2-135m-instruct", adapters={"pirate": "runs/pirate/adapter"}, port=8000)

Everything a user passes is checked before the model loads: adapter names and folders, the port,
the limits. The API key comes from `api_key` or the LMSTACK_API_KEY environment variable.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

from lmstack.errors import LmstackError
from lmstack.inputs import check_dir
from lmstack.serve.limits import API_KEY_ENV, Limits

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def parse_adapters(specs: list[str]) -> dict[str, Path]:
    """`NAME=PATH` strings into {name: adapter folder}, each folder checked to hold an adapter."""
    adapters: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise LmstackError(f"--adapter takes NAME=PATH (e.g. pirate=runs/pirate/adapter), got {spec!r}")
        if not ADAPTER_NAME.match(name):
            raise LmstackError(f"adapter name {name!r} may hold letters, digits and . _ : - (up to 128 characters)")
        if name in adapters:
            raise LmstackError(f"adapter name {name!r} is given twice; give each adapter its own name")
        folder = check_dir(path, "adapter folder")
        if not (folder / "adapter_config.json").is_file():
            raise LmstackError(f"{folder} is not a PEFT adapter folder (no adapter_config.json)")
        adapters[name] = folder
    return adapters


def check_address(host: str, port: int) -> None:
    """Refuse an address the server could not listen on (in use, not this machine's) before any work."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise LmstackError(f"cannot listen on {host}:{port} ({reason}); pick another --port or --host") from None


def serve(model: str, *, adapters: dict[str, Path] | None = None, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, limits: Limits | None = None, kv_cache_mb: float = 1024.0,
          template: str | None = None, device: str | None = None, dtype: str | None = None,
          served_name: str | None = None, embedder: str = "all-minilm-l6-v2") -> None:
    """Serve `model` over the OpenAI API (and the web UI at /ui/) until interrupted."""
    import uvicorn

    from lmstack.generate.engine import EngineConfig
    from lmstack.hub.load import load_model
    from lmstack.serve.app import create_app
    from lmstack.serve.backend import Backend
    from lmstack.tokenizer.chat_template import resolve_template

    check_address(host, port)
    if template is not None:
        resolve_template(template)
    limits = limits or Limits()
    limits.api_key = api_key or os.environ.get(API_KEY_ENV) or None
    config = EngineConfig(kv_cache_mb=kv_cache_mb, max_running=limits.max_sequences)
    bundle = load_model(model, device=device, dtype=dtype)
    backend = Backend(bundle, adapters=adapters, config=config, chat_template=template, embedder=embedder)
    app = create_app(backend, limits, served_name=served_name or model)
    logging.getLogger("lmstack").setLevel(logging.INFO)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
