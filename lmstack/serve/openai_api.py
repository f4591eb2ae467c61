"""The OpenAI-compatible endpoints: chat and text completions (streamed or not), models, embeddings.

A request is checked completely before anything runs (its model, the prompt's length against
the context, its schema or tools compiled to a grammar), then waits for room (`limits.Admission`)
and runs as `n` sequences in the engine. A streamed answer goes out as server-sent events, one
chunk per piece the engine delivers; a client that disconnects (streamed or not) has its
sequences cancelled. Every answer carries `usage`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from lmstack.errors import LmstackError
from lmstack.generate.structured import Grammar
from lmstack.serve.backend import Backend, Generation, Piece, TokenLogprob
from lmstack.serve.limits import Admission, APIError, Limits, Slot
from lmstack.serve.metrics import Stats
from lmstack.serve.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Sampling
from lmstack.serve.output_format import format_grammar, opens_call, parse_call, tool_grammar

DISCONNECT_CHECK_S = 0.25


@dataclass
class Answer:
    """One choice, as it builds up."""

    text: str = ""
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, piece: Piece) -> None:
        self.text += piece.text
        self.tokens += len(piece.token_ids)
        self.logprobs += piece.logprobs
        if piece.finish_reason == "error":
            raise APIError(500, piece.text, type="server_error", code="engine_error")
        self.finish_reason = piece.finish_reason or self.finish_reason


class OpenAIRoutes:
    def __init__(self, backend: Backend, limits: Limits, admission: Admission, stats: Stats,
                 served_name: str | None = None):
        self.backend, self.limits, self.admission, self.stats = backend, limits, admission, stats
        self.model_name = served_name or backend.model_name
        self.router = APIRouter()
        self.router.add_api_route("/v1/models", self.models, methods=["GET"])
        self.router.add_api_route("/v1/models/{model_id:path}", self.model, methods=["GET"])
        self.router.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        self.router.add_api_route("/v1/completions", self.completions, methods=["POST"])
        self.router.add_api_route("/v1/embeddings", self.embeddings, methods=["POST"])

    # --- models ----------------------------------------------------------------------------------

    def model_cards(self) -> list[dict[str, Any]]:
        created = int(time.time())
        cards = [{"id": self.model_name, "object": "model", "created": created, "owned_by": "lmstack",
                  "max_model_len": self.max_context}]
        cards += [{"id": name, "object": "model", "created": created, "owned_by": "lmstack", "parent": self.model_name,
                   "max_model_len": self.max_context} for name in self.backend.adapters]
        cards.append({"id": self.backend.embedder_name, "object": "model", "created": created, "owned_by": "lmstack"})
        return cards

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": self.model_cards()}

    async def model(self, model_id: str) -> dict[str, Any]:
        for card in self.model_cards():
            if card["id"] == model_id:
                return card
        raise _unknown_model(model_id, self.model_cards())

    def adapter_for(self, model: str) -> str | None:
        """The adapter a request's `model` names (None: the base model); 404 for anything else."""
        if model in (self.model_name, self.backend.model_name):
            return None
        if model in self.backend.adapters:
            return model
        raise _unknown_model(model, self.model_cards()[:-1])

    @property
    def max_context(self) -> int:
        window = self.backend.context_window
        return min(window, self.limits.max_context) if self.limits.max_context else window

    def answer_length(self, prompt_tokens: int, requested: int | None) -> int:
        """max_tokens for a prompt, or a 400 when prompt and answer do not fit the context."""
        limit = self.max_context
        if prompt_tokens >= limit:
            raise APIError(400, f"the prompt is {prompt_tokens} tokens but this server's context is {limit} tokens; "
                                "shorten the prompt", param="messages", code="context_length_exceeded")
        if requested is None:
            return limit - prompt_tokens
        if prompt_tokens + requested > limit:
            raise APIError(400, f"this server's context is {limit} tokens, but {prompt_tokens} prompt tokens and "
                                f"max_tokens {requested} make {prompt_tokens + requested}; lower max_tokens",
                           param="max_tokens", code="context_length_exceeded")
        return requested

    def generations(self, body: Sampling, prompts: list[list[int]], max_tokens: list[int], grammar: Grammar | None,
                    logprobs: int | None) -> list[Generation]:
        """`n` sequences for each prompt, choice i seeded with seed + i."""
        adapter = self.adapter_for(body.model)
        sampling = {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k, "min_p": body.min_p,
                    "repetition_penalty": body.repetition_penalty}
        if grammar is not None:
            self.backend.check_grammar(grammar)
        return [
            Generation(prompt, length, sampling, list(body.stop), _choice_seed(body.seed, i), grammar, adapter,
                       logprobs, body.stream, body.ignore_eos)
            for prompt, length in zip(prompts, max_tokens) for i in range(body.n)
        ]

    # --- chat ------------------------------------------------------------------------------------

    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        tools = [tool.model_dump(exclude_none=True) for tool in body.tools] if body.tools else None
        choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
        prompt = await run_in_threadpool(self.backend.chat_prompt, _messages(body), tools)
        max_tokens = self.answer_length(len(prompt), body.length)
        grammar = format_grammar(body.response_format) or tool_grammar(tools, choice)
        top = (body.top_logprobs or 0) if body.logprobs else None
        generations = self.generations(body, [prompt], [max_tokens], grammar, top)
        calls = tools if grammar is not None and choice != "none" and tools else None
        head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": body.model}
        slot = await self.admission.acquire(len(generations))
        if body.stream:
            return _sse(self._chat_stream(request, slot, generations, head, len(prompt), calls, body.include_usage))
        answers = await self._collect(request, slot, generations)
        choices = [{"index": i, **_chat_message(a, calls), "logprobs": _chat_logprobs(a.logprobs) if body.logprobs
                    else None} for i, a in enumerate(answers)]
        return {**head, "object": "chat.completion", "system_fingerprint": None, "choices": choices,
                "usage": _usage(len(prompt), answers)}

    async def _chat_stream(self, request: Request, slot: Slot, generations: list[Generation], head: dict[str, Any],
                           prompt_tokens: int, calls: list[dict] | None, include_usage: bool) -> AsyncIterator[str]:
        chunk = {**head, "object": "chat.completion.chunk", "system_fingerprint": None}
        answers = [Answer() for _ in generations]
        # A reply that may be a tool call is held back until it shows it is text (or until its end).
        held = [calls is not None for _ in generations]
        for i in range(len(generations)):
            yield _event({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                "logprobs": None, "finish_reason": None}]})
        async for i, piece in self._pieces(request, slot, generations):
            answer = answers[i]
            answer.add(piece)
            if held[i] and answer.text and not opens_call(answer.text) and piece.finish_reason is None \
                    and not _tool_only(calls, generations[i]):
                held[i], piece = False, Piece(answer.text, [], answer.logprobs)
            if held[i] and piece.finish_reason is None:
                continue
            if held[i]:
                delta = _chat_message(answer, calls)["message"]
                delta.pop("role")
                entries = answer.logprobs
            else:
                delta, entries = ({"content": piece.text} if piece.text else {}), piece.logprobs
            finish = _chat_finish(answer, calls) if piece.finish_reason else None
            if not delta and finish is None and not entries:
                continue
            out = {**chunk, "choices": [{"index": i, "delta": delta, "finish_reason": finish,
                                         "logprobs": _chat_logprobs(entries) if generations[i].logprobs is not None
                                         else None}]}
            if finish and not include_usage and all(a.finish_reason for a in answers):
                out["usage"] = _usage(prompt_tokens, answers)
            yield _event(out)
        if include_usage:
            yield _event({**chunk, "choices": [], "usage": _usage(prompt_tokens, answers)})
        yield "data: [DONE]\n\n"

    # --- text completions ------------------------------------------------------------------------

    async def completions(self, body: CompletionRequest, request: Request):
        prompts = [p if isinstance(p, list) else await run_in_threadpool(self.backend.encode, p) for p in body.prompts]
        for prompt in prompts:
            if not prompt:
                raise APIError(400, "a prompt has no tokens; give it some text", param="prompt")
            if max(prompt) >= self.backend.vocab_size:
                raise APIError(400, f"token id {max(prompt)} is outside the vocabulary (size "
                                    f"{self.backend.vocab_size})", param="prompt")
        lengths = [self.answer_length(len(p), body.length) for p in prompts]
        grammar = format_grammar(body.response_format)
        generations = self.generations(body, prompts, lengths, grammar, body.logprobs)
        echoes = [self.backend.decode(p) if body.echo else "" for p in prompts for _ in range(body.n)]
        head = {"id": f"cmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": body.model,
                "object": "text_completion"}
        prompt_tokens = sum(map(len, prompts))
        slot = await self.admission.acquire(len(generations))
        if body.stream:
            return _sse(self._completion_stream(request, slot, generations, head, prompt_tokens, echoes,
                                                body.include_usage))
        answers = await self._collect(request, slot, generations)
        choices = [{"index": i, "text": echoes[i] + a.text, "finish_reason": a.finish_reason,
                    "logprobs": _text_logprobs(a.logprobs, len(echoes[i])) if body.logprobs is not None else None}
                   for i, a in enumerate(answers)]
        return {**head, "system_fingerprint": None, "choices": choices, "usage": _usage(prompt_tokens, answers)}

    async def _completion_stream(self, request: Request, slot: Slot, generations: list[Generation],
                                 head: dict[str, Any], prompt_tokens: int, echoes: list[str],
                                 include_usage: bool) -> AsyncIterator[str]:
        answers = [Answer() for _ in generations]
        offsets = [len(echo) for echo in echoes]
        for i, echo in enumerate(echoes):
            if echo:
                yield _event({**head, "choices": [{"index": i, "text": echo, "logprobs": None, "finish_reason": None}]})
        async for i, piece in self._pieces(request, slot, generations):
            answers[i].add(piece)
            logprobs = None
            if generations[i].logprobs is not None:
                logprobs = _text_logprobs(piece.logprobs, offsets[i])
                offsets[i] += len(piece.text)
            out = {**head, "choices": [{"index": i, "text": piece.text, "logprobs": logprobs,
                                        "finish_reason": piece.finish_reason}]}
            if piece.finish_reason and not include_usage and all(a.finish_reason for a in answers):
                out["usage"] = _usage(prompt_tokens, answers)
            yield _event(out)
        if include_usage:
            yield _event({**head, "choices": [], "usage": _usage(prompt_tokens, answers)})
        yield "data: [DONE]\n\n"

    # --- embeddings ------------------------------------------------------------------------------

    async def embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        if body.model != self.backend.embedder_name:
            raise _unknown_model(body.model, self.model_cards()[-1:])
        vectors, tokens = await run_in_threadpool(self.backend.embed, body.texts)
        width = len(vectors[0])
        if body.dimensions is not None and body.dimensions != width:
            raise APIError(400, f"{body.model} gives {width}-dimensional vectors; drop dimensions or set it to {width}",
                           param="dimensions")
        if body.encoding_format == "base64":
            vectors = [base64.b64encode(np.asarray(v, dtype=np.float32).tobytes()).decode() for v in vectors]
        return {"object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    # --- running sequences -----------------------------------------------------------------------

    async def _pieces(self, request: Request, slot: Slot, generations: list[Generation]
                      ) -> AsyncIterator[tuple[int, Piece]]:
        """(choice index, piece) from every sequence as they come; leaving early cancels them all."""
        started = time.perf_counter()
        queue: asyncio.Queue[tuple[int, Piece | APIError | None]] = asyncio.Queue()

        async def pump(i: int, generation: Generation) -> None:
            try:
                async for piece in self.backend.generate(generation):
                    await queue.put((i, piece))
            except LmstackError as error:  # refused by the engine at submit (e.g. a prompt it cannot hold)
                await queue.put((i, APIError(400, str(error))))
            finally:
                await queue.put((i, None))

        tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(generations)]
        try:
            running, first = len(tasks), True
            while running:
                i, piece = await queue.get()
                if piece is None:
                    running -= 1
                    continue
                if isinstance(piece, APIError):
                    raise piece
                if first and piece.token_ids:
                    self.stats.observe_ttft(time.perf_counter() - started)
                    first = False
                yield i, piece
        finally:
            for task in tasks:
                task.cancel()
            slot.release()

    async def _collect(self, request: Request, slot: Slot, generations: list[Generation]) -> list[Answer]:
        """Every choice's whole answer; a client that disconnects meanwhile cancels them."""
        answers = [Answer() for _ in generations]

        async def gather() -> None:
            async for i, piece in self._pieces(request, slot, generations):
                answers[i].add(piece)

        task = asyncio.ensure_future(gather())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=DISCONNECT_CHECK_S)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
            await task
            return answers
        finally:
            task.cancel()
            slot.release()


# --- formatting -------------------------------------------------------------------------------


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events; an error after the stream has started is sent as an event of its own."""

    async def guarded() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except APIError as error:
            yield _event(error.body())
            yield "data: [DONE]\n\n"

    return StreamingResponse(guarded(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _choice_seed(seed: int | None, choice: int) -> int | None:
    return None if seed is None else (seed + choice) % 2**63


def _unknown_model(model: str, cards: list[dict[str, Any]]) -> APIError:
    names = ", ".join(card["id"] for card in cards)
    return APIError(404, f"the model {model!r} does not exist on this server; use one of: {names}", param="model",
                    code="model_not_found")


def _messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The conversation as the chat template wants it (text content; calls written as JSON)."""
    messages = []
    for message in body.messages:
        content = message.text
        if message.tool_calls:
            calls = [{"name": c.function.name, "arguments": _json_or_text(c.function.arguments)}
                     for c in message.tool_calls]
            content = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": content})
    return messages


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _tool_only(calls: list[dict] | None, generation: Generation) -> bool:
    """Whether the grammar admits only a call (tool_choice required or named), not text."""
    return calls is not None and generation.grammar is not None and generation.grammar.kind == "json_schema"


def _chat_message(answer: Answer, calls: list[dict] | None) -> dict[str, Any]:
    call = parse_call(answer.text, calls) if calls else None
    if call is None:
        return {"message": {"role": "assistant", "content": answer.text}, "finish_reason": answer.finish_reason}
    tool_call = {"index": 0, "id": f"call_{secrets.token_hex(12)}", "type": "function", "function": call}
    return {"message": {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            "finish_reason": "tool_calls"}


def _chat_finish(answer: Answer, calls: list[dict] | None) -> str | None:
    return _chat_message(answer, calls)["finish_reason"]


def _token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8", errors="replace"))


def _chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [
        {"token": e.text, "logprob": e.logprob, "bytes": _token_bytes(e.text),
         "top_logprobs": [{"token": text, "logprob": lp, "bytes": _token_bytes(text)} for _, text, lp in e.top]}
        for e in entries
    ], "refusal": None}


def _text_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """The completions API's (legacy) form: parallel lists, top alternatives as {token: logprob}."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return {"tokens": [e.text for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{text: lp for _, text, lp in e.top} for e in entries], "text_offset": offsets}


def _usage(prompt_tokens: int, answers: list[Answer]) -> dict[str, int]:
    completion = sum(a.tokens for a in answers)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
