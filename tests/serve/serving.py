"""Helpers for the server tests: uvicorn in a thread on a free port, tiny models with tokenizers.

The `openai` client (a real peer) talks to the live server over HTTP exactly as it talks to OpenAI.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator


class LiveServer:
    def __init__(self, app, port: int):
        import uvicorn

        self.app, self.port = app, port
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

    def post(self, path: str, body=None, **kwargs):
        import httpx

        return httpx.post(self.url + path, json=body, timeout=120, **kwargs)

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


def word_tokenizer():
    """The engine tests' 128-word ChatML tokenizer (tests/generate/conftest.py), loaded by path."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "generate" / "conftest.py"
    spec = importlib.util.spec_from_file_location("generate_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.word_tokenizer()


def byte_tokenizer():
    """Every byte is a token (byte-level BPE without merges), so a grammar can spell any JSON."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    from lmstack.tokenizer import Tokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(alphabet))}
    backend = Backend(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    return Tokenizer(backend, special_tokens={"bos_token": "<s>", "eos_token": "<|im_end|>"},
                     add_bos_token=False, chat_template="chatml")


def random_bundle(tokenizer, context: int, name: str):
    """A ModelBundle around a tiny random Llama sized to `tokenizer`."""
    from pathlib import Path

    import torch

    from lmstack.hub.load import ModelBundle
    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    config = ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                         num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=context)
    torch.manual_seed(0)
    model = Transformer(config).eval()
    with torch.no_grad():  # a flatter next-token distribution, so sampled choices differ
        model.lm_head.weight.mul_(0.1)
    return ModelBundle(model=model, tokenizer=tokenizer, config=config, generation_config={}, path=Path("."),
                       name=name)


def make_adapter(bundle, directory, seed: int, base: str):
    """A LoRA adapter with random (non-zero) factors on a copy of the model; returns the copy."""
    import copy

    import torch

    from lmstack.peft import LoraConfig, apply_lora, save_adapter

    torch.manual_seed(seed)
    model = copy.deepcopy(bundle.model)
    config = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    apply_lora(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_adapter(model, directory, base_model=base, config=config)
    return model.eval()
