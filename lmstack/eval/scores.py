"""Scores go into the registry against the model they were measured on, with the dataset (its
reference and content hash) and the settings that produced them: no number without its origin."""

from __future__ import annotations

from typing import Any

from lmstack import registry
from lmstack.data import content_hash, dataset_reference
from lmstack.hub.load import ModelBundle


def record_score(bundle: ModelBundle, metric: str, value: float, dataset: str, settings: dict[str, Any], *,
                 sha256: str | None = None, **details: Any) -> None:
    """Attach `metric = value`, measured on `dataset` with `settings`, to the bundle's model.

    `dataset` is a dataset file (hashed here) or, with `sha256` given, a reference taken as is (an
    evaluation task hashes its YAML and data files itself). `details` adds stderr, seed, ...
    """
    reference = dataset if sha256 else dataset_reference(dataset)
    details = {"settings": settings, "sha256": sha256 or content_hash(dataset), "model": bundle.name, **details}
    registry.add_score(bundle.lineage_id(), metric, value, dataset=reference, details=details)


def latest_scores(artifact_id: str) -> dict[str, registry.Score]:
    """The most recent score of each metric measured on an artifact."""
    return {score.metric: score for score in registry.scores(artifact_id)}  # oldest first: later ones win
