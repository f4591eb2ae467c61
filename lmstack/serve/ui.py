"""The web UI: a chat playground on the OpenAI API and read-only views of the registry.

The page (`static/`, plain HTML, CSS and JavaScript, no build step) is served at `/ui/`; it talks
to `/v1/*` like any client, and reads the registry through `/ui/api/registry`, which lists every
artifact with its parents (the family tree) and its scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.serve.limits import APIError

STATIC = Path(__file__).parent / "static"
PAGES = {"": "index.html", "app.js": "app.js", "style.css": "style.css"}


def ui_router(routes: Any) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @router.get("/ui/api/registry")
    async def registry_view() -> dict[str, Any]:
        return await run_in_threadpool(registry_snapshot)

    @router.get("/ui/api/server")
    async def server_view() -> dict[str, Any]:
        return {"model": routes.model_name, "adapters": list(routes.backend.adapters),
                "embedder": routes.backend.embedder_name, "max_context": routes.max_context,
                "max_sequences": routes.limits.max_sequences}

    @router.get("/ui/{name:path}", include_in_schema=False)  # last: the API paths above come first
    async def page(name: str) -> FileResponse:
        if name not in PAGES:
            raise APIError(404, f"no page /ui/{name}; the UI is at /ui/", type="not_found_error")
        return FileResponse(STATIC / PAGES[name])

    return router


def registry_snapshot() -> dict[str, Any]:
    """Every artifact with its parents and scores (the UI draws the tables and the tree from it)."""
    try:
        artifacts = registry.list_artifacts()
        rows = [{**a.to_dict(), "scores": [s.to_dict() for s in registry.scores(a.id)]} for a in artifacts]
    except LmstackError as error:
        raise APIError(503, f"the registry cannot be read: {error}", type="server_error") from None
    return {"database": str(registry.database_path()), "artifacts": rows}
