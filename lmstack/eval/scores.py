"""Scores go into the registry against the model they were measured on, with the dataset (its
reference and content hash) and the settings that produced them: no number without its origin."""

from __future__ import annotations

from typing import Any

from lmstack import registry
from lmstack.data import content_hash, dataset_reference
from lmstack.hub.load import ModelBundle


def record_score(bundle: ModelBundle, metric: str, value: float, dataset: str, settings: dict[str, Any]) -> None:
    """Attach `metric = value`, measured on `dataset` with `settings`, to the bundle's model."""
    details = {"settings": settings, "sha256": content_hash(dataset), "model": bundle.name}
    registry.add_score(bundle.lineage_id(), metric, value, dataset=dataset_reference(dataset), details=details)
