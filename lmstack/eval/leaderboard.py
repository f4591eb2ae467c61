"""`lmstack leaderboard`: every model in the registry with its scores, and a weighted selection
matrix to pick one for a use (the model-selection matrix of the course's primer).

Criteria are normalised across the ranked models to 0..1 (best 1, worst 0, min-max), weighted,
and summed. A criterion is a metric name (`lmstack_mc/acc`), or one of:
- `accuracy`: the mean of the accuracy-like metrics (acc, acc_norm, exact_match) that every
  ranked model has — models measured on different tasks are not compared on different tasks;
- `speed`: measured decode tokens/s (`lmstack eval speed MODEL`);
- `size`: size on disk (smaller is better);
- `judge`: the mean judge rating.
A model missing a criterion scores 0 on it, and the table says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.eval.metrics import HIGHER_IS_BETTER
from lmstack.eval.scores import latest_scores

ACCURACY_METRICS = ("acc", "acc_norm", "exact_match")
SPEED_METRIC = "speed/decode_tokens_per_second"
NAMED = ("accuracy", "speed", "size", "judge")


@dataclass
class Entry:
    id: str
    name: str
    kind: str
    operation: str
    scores: dict[str, float]
    size_bytes: int | None
    criteria: dict[str, float | None] = field(default_factory=dict)  # raw value per weighted criterion
    normalised: dict[str, float] = field(default_factory=dict)
    total: float | None = None
    missing: list[str] = field(default_factory=list)


def size_on_disk(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def parse_weights(text: str) -> dict[str, float]:
    """`accuracy=0.5,speed=0.3,size=0.2` -> weights (non-negative, finite, not all zero)."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            raise LmstackError(f"bad weight {part!r}; write CRITERION=NUMBER, e.g. accuracy=0.5") from None
        if not name.strip() or not math.isfinite(weight) or weight < 0:
            raise LmstackError(f"weight {part!r} must name a criterion and be a finite number >= 0")
        weights[name.strip()] = weight
    if not weights or not any(weights.values()):
        raise LmstackError("--weights needs at least one positive weight, e.g. accuracy=0.5,speed=0.3,size=0.2")
    return weights


def entries(kind: str | None = None) -> list[Entry]:
    """Every model (and adapter) with at least one score."""
    kinds = (kind,) if kind else ("model", "adapter")
    found = []
    for artifact in registry.list_artifacts():
        if artifact.kind not in kinds:
            continue
        scores = {metric: score.value for metric, score in latest_scores(artifact.id).items()}
        if scores:
            found.append(Entry(artifact.id, artifact.name, artifact.kind, artifact.operation, scores,
                               size_on_disk(artifact.path)))
    return found


def rank(board: list[Entry], weights: dict[str, float]) -> list[Entry]:
    """Fill each entry's criteria, normalised scores and weighted total; best first."""
    if not board:
        raise LmstackError("no model in the registry has scores yet; run `lmstack eval run MODEL --tasks ...` first")
    common = set.intersection(*(set(e.scores) for e in board))
    accuracy = sorted(m for m in common if m.rsplit("/", 1)[-1] in ACCURACY_METRICS)
    if "accuracy" in weights and not accuracy:
        raise LmstackError("the models share no accuracy metric; evaluate them on the same tasks "
                           "(or weight a metric by name)")
    known = set().union(*(e.scores for e in board))
    for name in weights:
        if name not in NAMED and name not in known:
            raise LmstackError(f"unknown criterion {name!r}; use {', '.join(NAMED)} or a metric such as "
                               f"{', '.join(sorted(known)[:3])}")
    for entry in board:
        entry.criteria = {name: _criterion(entry, name, accuracy) for name in weights}
    for name, weight in weights.items():
        values = [e.criteria[name] for e in board if e.criteria[name] is not None]
        low, high = (min(values), max(values)) if values else (0.0, 0.0)
        higher_better = _higher_is_better(name)
        for entry in board:
            value = entry.criteria[name]
            if value is None:
                entry.normalised[name] = 0.0
                entry.missing.append(name)
            elif high == low:
                entry.normalised[name] = 1.0
            else:
                share = (value - low) / (high - low)
                entry.normalised[name] = share if higher_better else 1 - share
    total_weight = sum(weights.values())
    for entry in board:
        entry.total = sum(weights[n] * entry.normalised[n] for n in weights) / total_weight
    return sorted(board, key=lambda e: -(e.total or 0))


def _criterion(entry: Entry, name: str, accuracy: list[str]) -> float | None:
    if name == "accuracy":
        return sum(entry.scores[m] for m in accuracy) / len(accuracy)
    if name == "speed":
        return entry.scores.get(SPEED_METRIC)
    if name == "size":
        return float(entry.size_bytes) if entry.size_bytes is not None else None
    if name == "judge":
        return entry.scores.get("judge/rating")
    return entry.scores.get(name)


def _higher_is_better(name: str) -> bool:
    if name == "size":
        return False
    if name in NAMED:
        return True
    return HIGHER_IS_BETTER.get(name.rsplit("/", 1)[-1].split(",")[0], True)


def leaderboard(*, weights: str | None = None, sort: str | None = None, kind: str | None = None) -> list[Entry]:
    """The board: ranked by `weights` when given, else sorted by the metric `sort` (best first)."""
    if kind is not None and kind not in ("model", "adapter"):
        raise LmstackError(f"--kind must be model or adapter, got {kind!r}")
    board = entries(kind)
    if weights:
        return rank(board, parse_weights(weights))
    if sort:
        if not any(sort in e.scores for e in board):
            raise LmstackError(f"no model has the metric {sort!r}; see the leaderboard's columns")
        sign = 1 if _higher_is_better(sort) else -1
        return sorted(board, key=lambda e: (sort not in e.scores, -sign * e.scores.get(sort, 0.0)))
    return board
