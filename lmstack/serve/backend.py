"""The server's one seam to the engine: prompts in, pieces of answers out, asynchronously.

The engine (`lmstack.generate.engine`) steps in a thread of its own here; the web server's event
loop never waits on it. After every step the thread asks the loop to collect what each request
gained (`RequestHandle.poll`), so a streamed token reaches its client within one step and
nothing polls on a timer. A request whose client goes away is cancelled in the engine, which
frees its sequence and KV blocks at the next step.

A step that raises is a bug in the engine: the thread logs it, ends the requests in flight with
an error and builds a fresh engine on the same weights, so the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import torch

from lmstack.errors import LmstackError
from lmstack.generate.engine import Engine, EngineConfig, EngineMetrics, Request
from lmstack.generate.structured import Grammar
from lmstack.generate.text import resolve_sampling, stop_token_ids
from lmstack.hub.load import ModelBundle
from lmstack.peft import read_lora_factors

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """One sequence to generate, in the server's terms."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingConfig keys; None = the model's default
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    grammar: Grammar | None = None
    adapter: str | None = None
    logprobs: int | None = None  # None: off; k: the chosen token's log-probability and the k best
    stream: bool = False  # deliver every token at once (else in the engine's batches)
    ignore_eos: bool = False  # no stop tokens: exactly max_tokens tokens (a grammar still ends the answer)


@dataclass
class TokenLogprob:
    token_id: int
    text: str
    logprob: float
    top: list[tuple[int, str, float]]  # the most likely tokens at this step: (id, text, log-probability)


@dataclass
class Piece:
    """What one sequence gained since its last piece."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error" on the last piece


class _Job:
    """A sequence in flight: its engine handle and the queue its consumer awaits."""

    def __init__(self, handle: Any, logprobs: list[TokenLogprob] | None):
        self.handle = handle
        self.pieces: asyncio.Queue[Piece] = asyncio.Queue()
        self.logprobs = logprobs  # filled by the engine thread, one entry per sampled token
        self.taken = 0  # logprob entries already handed out
        self.failed: str | None = None  # set by the engine thread when its engine broke


class Backend:
    """A loaded model (and its adapters) served by one engine running in a background thread."""

    def __init__(self, bundle: ModelBundle, *, adapters: dict[str, Path] | None = None,
                 config: EngineConfig | None = None, chat_template: str | None = None,
                 embedder: str = "all-minilm-l6-v2"):
        self.bundle = bundle
        self.adapters = {name: Path(path).resolve() for name, path in (adapters or {}).items()}
        self.config = config or EngineConfig()
        self.chat_template = chat_template
        self.embedder_name = embedder
        self.stop_ids = stop_token_ids(bundle)
        self.engine = self._new_engine()
        for path in self.adapters.values():  # a broken adapter is refused now, not at its first request
            self.engine.lora.check(str(path))
        self._jobs: dict[str, _Job] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._engine_lock = threading.Lock()  # held while submitting, and while an engine is replaced
        self._metrics = self.engine.metrics()
        self._embedder: Any = None
        self._embed_lock = threading.Lock()
        self.failures = 0  # engine steps that raised

    # --- what is served --------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.bundle.name

    @property
    def context_window(self) -> int:
        """Tokens one sequence may hold: the model's window, or less when the KV cache is smaller."""
        return min(self.bundle.config.max_position_embeddings, self.engine.capacity)

    @property
    def vocab_size(self) -> int:
        return self.bundle.config.vocab_size

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of a conversation through the chat template, ready for the assistant's turn.

        Tools go to the template when it knows about them; otherwise they are described in a
        system message, with the JSON form a call takes.
        """
        template = self.chat_template or self.bundle.tokenizer.chat_template
        if template is None:
            raise LmstackError("this model has no chat template; start the server with --template "
                               "(e.g. chatml) or use /v1/completions")
        if tools and "tools" not in template:
            messages = _with_tool_instructions(messages, tools)
            tools = None
        return self.bundle.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                         chat_template=self.chat_template, tools=tools)

    def encode(self, text: str) -> list[int]:
        return self.bundle.tokenizer.encode(text)

    def decode(self, token_ids: list[int]) -> str:
        return self.bundle.tokenizer.decode(token_ids, skip_special_tokens=True)

    def check_grammar(self, grammar: Grammar) -> None:
        """Refuse a schema, regex or grammar llguidance cannot compile (LmstackError naming why)."""
        grammar.compiled()

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="lmstack-serve-engine", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.engine.close()

    def metrics(self) -> EngineMetrics:
        """The engine's figures as of its last step (read there, so no lock is needed here)."""
        return self._metrics

    async def generate(self, generation: Generation) -> AsyncIterator[Piece]:
        """Submit one sequence and yield its pieces; leaving early cancels it in the engine."""
        self._loop = asyncio.get_running_loop()
        job = self._submit(generation)
        try:
            while True:
                piece = await job.pieces.get()
                yield piece
                if piece.finish_reason is not None:
                    return
        finally:
            if self._jobs.pop(job.handle.id, None) is not None:
                self.engine.cancel(job.handle.id)
                self._wake.set()

    def _submit(self, generation: Generation) -> _Job:
        sampling = resolve_sampling(self.bundle.generation_config, generation.sampling)
        constraint = None
        if generation.grammar is not None:
            constraint = generation.grammar.constraint(self.bundle.tokenizer, self.vocab_size, self.stop_ids)
        logprobs: list[TokenLogprob] | None = None
        observer = None
        if generation.logprobs is not None:
            logprobs = []
            observer = self._logprob_observer(logprobs, generation.logprobs)
        request = Request(
            list(generation.prompt_ids), sampling=sampling, max_new_tokens=generation.max_tokens,
            stop_token_ids=() if generation.ignore_eos else tuple(self.stop_ids), stop=tuple(generation.stop), constraint=constraint,
            adapter=str(self.adapters[generation.adapter]) if generation.adapter else None,
            seed=generation.seed, stream=generation.stream, observer=observer,
        )
        with self._engine_lock:
            job = _Job(self.engine.submit(request), logprobs)
            self._jobs[job.handle.id] = job
        self._wake.set()
        return job

    def _logprob_observer(self, entries: list[TokenLogprob], top: int):
        decode = self.bundle.tokenizer.decode

        def observe(scores: torch.Tensor, chosen: int) -> None:
            logprobs = scores.float().log_softmax(-1)
            best = logprobs.topk(top) if top else None
            alternatives = [] if best is None else [
                (int(i), decode([int(i)]), float(p)) for p, i in zip(best.values, best.indices)]
            entries.append(TokenLogprob(chosen, decode([chosen]), float(logprobs[chosen]), alternatives))

        return observe

    def _run(self) -> None:
        """The engine thread: step while there is work, hand the outputs to the event loop."""
        while not self._stopping:
            if not self.engine.has_work():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                self.engine.step()
            except Exception as error:  # a bug in a step: keep serving on a fresh engine
                log.exception("an engine step failed; restarting the engine")
                self.failures += 1
                self._restart(error)
            self._metrics = self.engine.metrics()
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._deliver)

    def _restart(self, error: Exception) -> None:
        with self._engine_lock:
            broken, self.engine = self.engine, self._new_engine()
            broken.close()
            failed = list(self._jobs.values())
        for job in failed:
            job.failed = f"the engine failed: {error}"  # delivered by the loop as an error piece

    def _deliver(self) -> None:
        """In the event loop: move what each request gained into its queue."""
        for request_id, job in list(self._jobs.items()):
            if job.failed:
                job.pieces.put_nowait(Piece(job.failed, [], [], "error"))
                self._jobs.pop(request_id, None)
                continue
            for output in job.handle.poll():
                job.pieces.put_nowait(self._piece(job, output))
                if output.finished:
                    self._jobs.pop(request_id, None)

    def _piece(self, job: _Job, output: Any) -> Piece:
        tokens = [t for t in output.token_ids if t not in self.stop_ids]
        entries: list[TokenLogprob] = []
        if job.logprobs is not None:
            fresh = job.logprobs[job.taken: job.taken + len(output.token_ids)]
            job.taken += len(fresh)
            entries = [e for e in fresh if e.token_id not in self.stop_ids]
        return Piece(output.text, tokens, entries, output.finish_reason if output.finished else None)

    def _new_engine(self) -> Engine:
        loader = self._load_adapter if self.adapters else None
        return Engine(self.bundle.model, tokenizer=self.bundle.tokenizer, config=self.config, adapter_loader=loader)

    def _load_adapter(self, key: str):
        return read_lora_factors(Path(key))

    # --- embeddings ------------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Unit vectors for `texts` and the tokens read (blocking: call it from a worker thread)."""
        from lmstack.rag.embeddings import embed, load_embedder

        with self._embed_lock:
            if self._embedder is None:
                self._embedder = load_embedder(self.embedder_name)
            vectors = embed(self._embedder, texts)
            tokens = sum(len(self._embedder.token_spans(text)) for text in texts)
        return vectors.tolist(), tokens


def _with_tool_instructions(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with the tools described in its system message (for templates without tools)."""
    described = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in tools)
    instructions = ("You can call these functions:\n" + described + "\nTo call one, reply with only a JSON object "
                    '{"name": <function name>, "arguments": <arguments object>}.')
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{instructions}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]

