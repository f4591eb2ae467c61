"""Arena ratings from pairwise battles, as Chatbot Arena computes them.

A battle is `{"model_a", "model_b", "winner": "model_a" | "model_b" | "tie"}` (FastChat's format,
what `lmstack eval judge` writes). Two views of the same battles:

- Bradley-Terry: each model has a strength s, and P(a beats b) = 1 / (1 + 10^((s_b - s_a) / 400)).
  The strengths that make the observed results most likely are found by minorization-
  maximization (Hunter, 2004); a tie counts as half a win for each side. Ratings are centred on
  1000. The 95% confidence intervals come from refitting on battles resampled with replacement.
- Elo: the online rule, battle by battle in the order given (K = 4, start 1000). It depends on the
  order, which is why the arena leaderboard moved to Bradley-Terry; it is shown beside it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from lmstack.data import read_records
from lmstack.errors import LmstackError

SCALE, BASE, START = 400.0, 10.0, 1000.0
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")


@dataclass
class Rating:
    model: str
    rating: float  # Bradley-Terry
    lower: float  # 95% bootstrap interval
    upper: float
    elo: float  # online Elo
    battles: int
    wins: float  # ties count half


def read_battles(path: str) -> list[dict[str, str]]:
    """Battles from a JSONL/JSON/CSV/Parquet file; an error names the first bad record."""
    battles = read_records(path)
    if not battles:
        raise LmstackError(f"{path} has no battles")
    for i, battle in enumerate(battles, 1):
        if not all(isinstance(battle.get(k), str) and battle[k] for k in ("model_a", "model_b")):
            raise LmstackError(f"{path}: battle {i} needs 'model_a' and 'model_b' names")
        if battle.get("winner") not in (*WINNERS, "error"):
            raise LmstackError(f"{path}: battle {i} has winner {battle.get('winner')!r}; use {', '.join(WINNERS)}")
        if battle["model_a"] == battle["model_b"]:
            raise LmstackError(f"{path}: battle {i} pits {battle['model_a']} against itself")
    return battles


def bradley_terry(battles: list[dict[str, str]], *, iterations: int = 10_000, tolerance: float = 1e-10,
                  prior: float = 0.01) -> dict[str, float]:
    """Bradley-Terry ratings (Elo scale, mean 1000) of every model in `battles`.

    `prior` adds that many virtual ties between every pair that met, so a model that never won
    (or never lost) still gets a finite rating.
    """
    models = sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    games = [[0.0] * n for _ in range(n)]  # games[i][j]: battles between i and j
    wins = [0.0] * n
    for battle in battles:
        a, b = index[battle["model_a"]], index[battle["model_b"]]
        games[a][b] += 1
        games[b][a] += 1
        score = {"model_a": 1.0, "model_b": 0.0}.get(battle["winner"], 0.5)
        wins[a] += score
        wins[b] += 1 - score
    for i in range(n):
        for j in range(n):
            if games[i][j] and i != j:
                games[i][j] += 2 * prior
                wins[i] += prior
    strength = [1.0] * n
    for _ in range(iterations):
        updated = [wins[i] / sum(games[i][j] / (strength[i] + strength[j]) for j in range(n) if games[i][j])
                   for i in range(n)]
        centre = math.exp(sum(math.log(p) for p in updated) / n)  # the scale is free: fix the geometric mean
        updated = [p / centre for p in updated]
        change = max(abs(math.log(u / s)) for u, s in zip(updated, strength))
        strength = updated
        if change < tolerance:
            break
    return {m: START + SCALE * math.log(strength[index[m]], BASE) for m in models}


def online_elo(battles: list[dict[str, str]], *, k: float = 4.0) -> dict[str, float]:
    """The classic Elo update, battle by battle, in the order given."""
    ratings: dict[str, float] = {}
    for battle in battles:
        a, b = battle["model_a"], battle["model_b"]
        ra, rb = ratings.setdefault(a, START), ratings.setdefault(b, START)
        expected_a = 1 / (1 + BASE ** ((rb - ra) / SCALE))
        score_a = {"model_a": 1.0, "model_b": 0.0}.get(battle["winner"], 0.5)
        ratings[a] = ra + k * (score_a - expected_a)
        ratings[b] = rb + k * ((1 - score_a) - (1 - expected_a))
    return ratings


def arena(battles: list[dict[str, Any]], *, rounds: int = 1000, seed: int = 0) -> list[Rating]:
    """Ratings of every model, best first; battles whose judgment failed ('error') are left out."""
    if not 0 <= rounds <= 100_000:
        raise LmstackError(f"bootstrap rounds must be in 0..100000, got {rounds}")
    usable = [b for b in battles if b["winner"] != "error"]
    if not usable:
        raise LmstackError("no battle has a result (every judgment failed); nothing to rate")
    ratings, elo = bradley_terry(usable), online_elo(usable)
    rnd = random.Random(seed)
    samples: dict[str, list[float]] = {m: [] for m in ratings}
    for _ in range(rounds):
        for model, value in bradley_terry(rnd.choices(usable, k=len(usable)), iterations=200,
                                          tolerance=1e-6).items():
            samples[model].append(value)
    table = []
    for model, rating in ratings.items():
        played = [b for b in usable if model in (b["model_a"], b["model_b"])]
        won = sum(1.0 if b["winner"] == ("model_a" if b["model_a"] == model else "model_b")
                  else 0.5 if b["winner"].startswith("tie") else 0.0 for b in played)
        lower, upper = _interval(samples[model]) if samples[model] else (rating, rating)
        table.append(Rating(model, rating, lower, upper, elo[model], len(played), won))
    return sorted(table, key=lambda r: -r.rating)


def _interval(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[int(0.025 * (len(ordered) - 1))], ordered[int(round(0.975 * (len(ordered) - 1)))]
