"""What keeps one server healthy under many clients: API keys, request size, admission.

- `Guard` (ASGI middleware) checks the API key on the API routes and refuses a body over the size
  limit with 413 before any of it is parsed.
- `Admission` lets at most `max_sequences` sequences generate at once. A request that finds no
  room waits in line; when the line is already `max_waiting` long it is refused at once with 429,
  and one that waits longer than `queue_timeout` seconds gets 503, both with Retry-After: a busy
  server says so quickly instead of piling up work it cannot finish.

Errors use OpenAI's body, `{"error": {"message", "type", "param", "code"}}`, so clients show them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from lmstack.errors import LmstackError

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

API_KEY_ENV = "LMSTACK_API_KEY"


@dataclass
class Limits:
    api_key: str | None = None  # None: no key needed
    max_body_bytes: int = 8 * 2**20
    max_sequences: int = 32  # sequences generating at once (n counts each choice)
    max_waiting: int = 256  # requests waiting for room before new ones get 429
    queue_timeout: float = 60.0  # seconds a request may wait for room before it gets 503
    max_context: int | None = None  # prompt + answer tokens per sequence (None: the model's window)

    def __post_init__(self) -> None:
        checks = [
            (self.max_body_bytes >= 1, f"max_body_bytes must be >= 1, got {self.max_body_bytes}"),
            (self.max_sequences >= 1, f"max_sequences must be >= 1, got {self.max_sequences}"),
            (self.max_waiting >= 0, f"max_waiting must be >= 0, got {self.max_waiting}"),
            (math.isfinite(self.queue_timeout) and self.queue_timeout > 0,
             f"queue_timeout must be a finite number of seconds > 0, got {self.queue_timeout}"),
            (self.max_context is None or self.max_context >= 2, f"max_context must be >= 2, got {self.max_context}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LmstackError(message)


class APIError(Exception):
    """A request the server answers with an OpenAI-style error."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class Guard:
    """ASGI middleware: the API key on protected paths, then the body size limit."""

    def __init__(self, app: ASGIApp, limits: Limits, protected: tuple[str, ...] = ("/v1/", "/ui/api/")):
        self.app, self.limits, self.protected = app, limits, protected

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.limits.api_key and scope["path"].startswith(self.protected) and not self._authorized(headers):
            return await _reply(send, APIError(401, "invalid or missing API key; send it as 'Authorization: Bearer "
                                                    "KEY'", type="authentication_error", code="invalid_api_key"))
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await _reply(send, _too_large(limit))
        body, more = bytearray(), True
        while more:  # read the body here, so an oversized one never reaches the parser
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await _reply(send, _too_large(limit))
        await self.app(scope, _replay(bytes(body), receive), send)

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.limits.api_key.encode())


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than the server's limit of {limit} bytes",
                    code="request_too_large")


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as a server would

    return replay


async def _reply(send: Callable, error: APIError) -> None:
    payload = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Slot:
    """Room for `size` sequences; release it once (more calls are harmless)."""

    def __init__(self, admission: "Admission", size: int):
        self.admission, self.size, self.held = admission, size, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission._give_back(self.size)

    def __del__(self) -> None:  # a response dropped before it ran must not keep its room forever
        self.release()


class Admission:
    """First come, first served room for sequences, with a bounded line and a bounded wait."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.in_use = 0
        self.line: deque[tuple[int, asyncio.Future]] = deque()
        self.refused = {"busy": 0, "timeout": 0}

    @property
    def waiting(self) -> int:
        return len(self.line)

    async def acquire(self, size: int) -> Slot:
        capacity = self.limits.max_sequences
        if size > capacity:
            raise APIError(400, f"n={size} is more than the {capacity} sequences this server runs at once",
                           param="n")
        if not self.line and self.in_use + size <= capacity:
            self.in_use += size
            return Slot(self, size)
        if len(self.line) >= self.limits.max_waiting:
            self.refused["busy"] += 1
            raise APIError(429, f"the server is busy ({self.in_use} sequences running, {len(self.line)} requests "
                                "waiting); retry shortly", type="rate_limit_exceeded", code="server_busy",
                           headers={"Retry-After": "1"})
        entry = (size, asyncio.get_running_loop().create_future())
        self.line.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(entry[1]), self.limits.queue_timeout)
        except asyncio.TimeoutError:
            if entry[1].done():  # admitted at the last moment: keep the room
                return Slot(self, size)
            self.line.remove(entry)
            self.refused["timeout"] += 1
            self._admit()
            raise APIError(503, f"no room to run this request within {self.limits.queue_timeout:g} s; retry later",
                           type="server_overloaded", code="queue_timeout", headers={"Retry-After": "5"}) from None
        except asyncio.CancelledError:  # the client left while waiting
            if entry in self.line:
                self.line.remove(entry)
            elif entry[1].done():
                self._give_back(size)
            raise
        return Slot(self, size)

    def _give_back(self, size: int) -> None:
        self.in_use -= size
        self._admit()

    def _admit(self) -> None:
        while self.line and self.in_use + self.line[0][0] <= self.limits.max_sequences:
            size, future = self.line.popleft()
            self.in_use += size
            future.set_result(None)
