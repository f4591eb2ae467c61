"""The server as one FastAPI app: the OpenAI API, health and metrics, and the web UI.

    app = create_app(backend, Limits(api_key="...", max_sequences=16))
    uvicorn.run(app, port=8000)

Every failure a client can cause is answered with a 4xx and OpenAI's error body (validation
errors as 400, as OpenAI does, not FastAPI's 422); the process keeps serving.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from lmstack.errors import LmstackError
from lmstack.serve import metrics
from lmstack.serve.backend import Backend
from lmstack.serve.limits import Admission, APIError, Guard, Limits, error_body
from lmstack.serve.openai_api import OpenAIRoutes
from lmstack.serve.ui import ui_router

log = logging.getLogger(__name__)

HTTP_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                    405: "invalid_request_error", 413: "invalid_request_error"}


def create_app(backend: Backend, limits: Limits | None = None, *, served_name: str | None = None) -> FastAPI:
    limits = limits or Limits()
    admission = Admission(limits)
    stats = metrics.Stats()
    routes = OpenAIRoutes(backend, limits, admission, stats, served_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        yield
        backend.close()

    app = FastAPI(title="lmstack", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.backend, app.state.admission = backend, admission
    app.include_router(routes.router)
    app.include_router(ui_router(routes))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": routes.model_name}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        return metrics.render(backend.metrics(), admission.waiting, admission.refused, backend.failures, stats)

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(error), status_code=400)

    @app.exception_handler(LmstackError)
    async def refused(_: Request, error: LmstackError) -> JSONResponse:
        # The library's user errors (an invalid schema or grammar, a prompt the engine cannot hold)
        return JSONResponse(error_body(str(error), "invalid_request_error"), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        kind = HTTP_ERROR_TYPES.get(error.status_code, "invalid_request_error")
        return JSONResponse(error_body(str(error.detail), kind), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def bug(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error while answering a request")
        return JSONResponse(error_body(f"internal error: {type(error).__name__}", "server_error"), status_code=500)

    app.add_middleware(Guard, limits=limits)
    app.add_middleware(metrics.CountResponses, stats=stats)
    return app


def _validation_body(error: RequestValidationError) -> dict:
    """The first problem, named by its field path (`messages.0.role`), in OpenAI's error body."""
    problems = error.errors()
    first = problems[0] if problems else {"msg": "invalid request", "loc": ()}
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return error_body(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                          "invalid_request_error", None, "invalid_json")
    message = first["msg"].removeprefix("Value error, ")
    param = ".".join(where) or None
    return error_body(f"{param}: {message}" if param else message, "invalid_request_error", param, "invalid_value")
