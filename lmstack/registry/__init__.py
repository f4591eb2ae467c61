"""The model registry: every artifact lmstack makes, with its parents, recipe and scores."""

from lmstack.registry.db import (
    Artifact,
    Score,
    add_score,
    children,
    database_path,
    find_by_path,
    get,
    lineage,
    list_artifacts,
    record,
    scores,
)

__all__ = [
    "Artifact",
    "Score",
    "add_score",
    "children",
    "database_path",
    "find_by_path",
    "get",
    "lineage",
    "list_artifacts",
    "record",
    "scores",
]
