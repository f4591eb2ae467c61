"""The language model the stages talk to (RAG, agents, synthetic data): a local lmstack model or
an OpenAI-compatible endpoint, behind three calls.

- `chat(messages, ...)`: the reply to one conversation, greedy or sampled with a seed.
- `complete(prompts, ...)`: one greedy chat reply per prompt (a batch runs together on a local model).
- `yes_probability(prompts)`: P("Yes") / (P("Yes") + P("No")) for the first token of the reply,
  read from the model's next-token distribution. It scores passage relevance for re-ranking and
  judge verdicts, and is steadier than parsing a sampled word.

A reference `openai:URL#MODEL` names an endpoint; anything else is an lmstack model reference.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from typing import Any, Protocol

from lmstack.errors import LmstackError
from lmstack.tokenizer.chat_template import Messages


class LLM(Protocol):
    name: str
    context_window: int  # tokens the model sees at once

    def chat(self, messages: Messages, *, max_new_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = None) -> str: ...

    def complete(self, prompts: list[str], *, system: str | None = None, max_new_tokens: int = 256,
                 stop: list[str] | None = None) -> list[str]: ...

    def yes_probability(self, prompts: list[str], *, system: str | None = None) -> list[float]: ...

    def count_tokens(self, text: str) -> int: ...


class LocalLLM:
    """An lmstack model, greedy, through `generate_text` (the chat template when the model has one)."""

    def __init__(self, ref: str, device: str | None = None, dtype: str | None = None, bundle: Any = None):
        if bundle is None:
            from lmstack.hub.load import load_model

            bundle = load_model(ref, device=device, dtype=dtype)
        self.bundle = bundle
        self.name = ref
        self.context_window = bundle.config.max_position_embeddings

    def chat(self, messages: Messages, *, max_new_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = None) -> str:
        from lmstack.generate.text import chat_text

        return chat_text(self.bundle, messages, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
                         top_p=0.95 if temperature else None).text

    def complete(self, prompts: list[str], *, system: str | None = None, max_new_tokens: int = 256,
                 stop: list[str] | None = None) -> list[str]:
        from lmstack.generate.text import generate_text

        if not prompts:
            return []
        results = generate_text(self.bundle, list(prompts), system=system, max_new_tokens=max_new_tokens,
                                stop=stop, do_sample=False)
        return [result.text.strip() for result in results]

    def yes_probability(self, prompts: list[str], *, system: str | None = None) -> list[float]:
        from lmstack.generate.text import generate_text

        if not prompts:
            return []
        results = generate_text(self.bundle, list(prompts), system=system, max_new_tokens=1, explain=True,
                                explain_top_k=64, do_sample=False)
        return [_yes_share({c.text: c.probability for c in result.steps[0].candidates}) for result in results]

    def count_tokens(self, text: str) -> int:
        return len(self.bundle.tokenizer.encode(text, add_special_tokens=False))


def _yes_share(candidates: dict[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) over first-token candidates (any case, any leading space)."""
    yes = sum(p for text, p in candidates.items() if text.strip().lower() in ("yes", "y"))
    no = sum(p for text, p in candidates.items() if text.strip().lower() in ("no", "n"))
    return yes / (yes + no) if yes + no > 0 else 0.5


class EndpointLLM:
    """An OpenAI-compatible `/chat/completions` endpoint; yes/no from `top_logprobs` when served."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, context_window: int = 8192,
                 timeout: float = 120.0):
        self.base_url, self.model, self.api_key, self.timeout = base_url.rstrip("/"), model, api_key, timeout
        self.name = f"openai:{self.base_url}#{model}"
        self.context_window = context_window

    def _choice(self, messages: Messages, **options: Any) -> dict[str, Any]:
        reply = post_json(f"{self.base_url}/chat/completions", {"model": self.model, "messages": messages,
                                                                "temperature": 0, **options}, self.api_key, self.timeout)
        try:
            choice = reply["choices"][0]
            choice["message"]["content"] = choice["message"].get("content") or ""
            return choice
        except (KeyError, IndexError, TypeError):
            raise LmstackError(f"the model endpoint {self.base_url} sent no choices; check the URL and model") from None

    def _ask(self, prompt: str, system: str | None, **options: Any) -> dict[str, Any]:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self._choice(messages, **options)

    def chat(self, messages: Messages, *, max_new_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = None) -> str:
        options = {"max_tokens": max_new_tokens, "temperature": temperature, **({"seed": seed} if seed is not None else {})}
        return self._choice(messages, **options)["message"]["content"]

    def complete(self, prompts: list[str], *, system: str | None = None, max_new_tokens: int = 256,
                 stop: list[str] | None = None) -> list[str]:
        options: dict[str, Any] = {"max_tokens": max_new_tokens, **({"stop": stop} if stop else {})}
        return [self._ask(p, system, **options)["message"]["content"].strip() for p in prompts]

    def yes_probability(self, prompts: list[str], *, system: str | None = None) -> list[float]:
        shares = []
        for prompt in prompts:
            choice = self._ask(prompt, system, max_tokens=1, logprobs=True, top_logprobs=20)
            content = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
            candidates = {c["token"]: math.exp(c["logprob"]) for c in content.get("top_logprobs", [])}
            if not candidates:  # no log-probs served: the word itself decides
                word = choice["message"]["content"].strip().lower()
                candidates = {word: 1.0}
            shares.append(_yes_share(candidates))
        return shares

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1  # no tokenizer at hand: about four characters a token


def post_json(url: str, payload: dict[str, Any], api_key: str | None, timeout: float) -> Any:
    """POST JSON to an OpenAI-compatible endpoint and parse the reply; failures are one-line errors."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise LmstackError(f"the endpoint {url} failed ({error}); check the URL and model") from None


def load_llm(ref: str, device: str | None = None, dtype: str | None = None) -> LLM:
    if ref.startswith("openai:"):
        url, _, model = ref.removeprefix("openai:").partition("#")
        if not url or not model:
            raise LmstackError(f"write an endpoint model as openai:URL#MODEL, got {ref!r}")
        return EndpointLLM(url, model, api_key=os.environ.get("OPENAI_API_KEY"))
    return LocalLLM(ref, device=device, dtype=dtype)
