"""The model registry: every artifact lmstack makes, with its parents, recipe, datasets and scores.

Stages record through `record` (what an operation made) and `add_score` (what was measured on an
artifact), called where the artifact is finished; nothing else writes lineage.
"""

from lmstack.registry.db import (
    Artifact,
    Score,
    add_score,
    children,
    database_path,
    find_by_path,
    lookup,
    get,
    id_for,
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
    "lookup",
    "get",
    "id_for",
    "lineage",
    "list_artifacts",
    "record",
    "scores",
]
