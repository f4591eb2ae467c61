"""`list_models`: what the user can run, the catalog (pulled or not) and the models made locally."""

from __future__ import annotations

from pathlib import Path

from lmstack.hub.catalog import CATALOG, DEFAULT_MODEL
from lmstack.hub.pull import is_pulled, model_path


def _size_on_disk(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return None


def _catalog_models() -> list[dict]:
    from lmstack import registry

    models = []
    for entry in CATALOG.values():
        pulled = is_pulled(entry)
        default = " (default)" if entry.name == DEFAULT_MODEL else ""
        artifact = registry.find_by_path(model_path(entry)) if pulled else None
        models.append({
            "name": entry.name,
            "origin": "catalog",
            "format": "gguf",
            "available": pulled,
            "path": str(model_path(entry)) if pulled else None,
            "size": entry.size,
            "license": entry.license,
            "description": entry.description + default,
            "registry_id": artifact.id if artifact else None,
        })  # fmt: skip
    return models


def _local_models() -> list[dict]:
    """Models the registry knows that were made here (exported, trained, merged...)."""
    from lmstack import registry

    models = []
    for artifact in registry.list_artifacts("model"):
        if artifact.operation == "pull":
            continue  # listed with the catalog already
        size = _size_on_disk(artifact.path)
        models.append({
            "name": artifact.name,
            "origin": artifact.operation,
            "format": "hf" if artifact.path.is_dir() else "gguf",
            "available": size is not None,
            "path": str(artifact.path),
            "size": size,
            "license": None,
            "description": f"made by {artifact.operation} on {artifact.created_at}",
            "registry_id": artifact.id,
        })  # fmt: skip
    return models


def list_models() -> list[dict]:
    """Catalog models first (pulled or not), then local models from the registry, oldest first."""
    return _catalog_models() + _local_models()
