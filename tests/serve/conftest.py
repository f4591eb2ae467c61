"""A live server for the tests: uvicorn in a thread on a free port, on a tiny model or the real one.

The `openai` client (a real peer) talks to it over HTTP exactly as it talks to OpenAI.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest


class LiveServer:
    def __init__(self, app, port: int):
        import uvicorn

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, api_key: str = "none", **kwargs):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(bundle, limits=None, adapters=None, served_name: str = "test-model", **engine) -> Iterator[LiveServer]:
    from lmstack.generate.engine import EngineConfig
    from lmstack.serve.app import create_app
    from lmstack.serve.backend import Backend

    config = EngineConfig(**({"kv_cache_mb": 64.0} | engine))
    backend = Backend(bundle, adapters=adapters, config=config)
    with LiveServer(create_app(backend, limits, served_name=served_name), free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_bundle(tiny_gguf):
    from lmstack.hub.load import load_model

    return load_model(tiny_gguf, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def tiny_server(tiny_bundle):
    with live_server(tiny_bundle) as server:
        yield server
