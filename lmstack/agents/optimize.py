"""`lmstack agent optimize`: prompt optimisation in the spirit of DSPy.

A program is an instruction plus few-shot demonstrations. The optimiser tries every candidate
instruction (the user's, plus any the model proposes from training examples) with no demos and
with `trials` random sets of `shots` demos drawn from the training set (DSPy's random search over
few-shot sets), scores each program on the dev set with the metric, and keeps the best. The
report gives the dev score of the first instruction without demos (before) and of the best
program (after); the dev set chooses, so report a held-out score too when claiming a gain.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmstack.errors import LmstackError

METRICS: dict[str, Callable[[str, str], float]] = {
    "exact": lambda prediction, expected: float(_normal(prediction) == _normal(expected)),
    "contains": lambda prediction, expected: float(_normal(expected) in _normal(prediction)),
}


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


@dataclass
class Program:
    instruction: str
    demos: list[dict[str, str]] = field(default_factory=list)  # [{"input", "output"}]

    def prompt(self, text: str) -> str:
        shots = "".join(f"Input: {d['input']}\nOutput: {d['output']}\n\n" for d in self.demos)
        return f"{self.instruction}\n\n{shots}Input: {text}\nOutput:"


def read_examples(path: str | Path) -> list[dict[str, str]]:
    """JSONL rows of {"input", "output"}, checked."""
    from lmstack.data.io import read_source

    source = read_source(path)
    for row, where in zip(source.records, source.locations):
        if not all(isinstance(row.get(key), str) for key in ("input", "output")):
            raise LmstackError(f"{source.path}, {where}: needs \"input\" and \"output\" strings")
    if not source.records:
        raise LmstackError(f"{source.path} has no examples")
    return [{"input": row["input"], "output": row["output"]} for row in source.records]


def evaluate_program(llm, program: Program, dev: list[dict[str, str]], metric: str = "exact",
                     max_new_tokens: int = 16) -> float:
    """The mean metric of the program's predictions (first line of each reply) on `dev`."""
    replies = llm.complete([program.prompt(row["input"]) for row in dev], max_new_tokens=max_new_tokens)
    predictions = [reply.strip().splitlines()[0] if reply.strip() else "" for reply in replies]
    return sum(METRICS[metric](p, row["output"]) for p, row in zip(predictions, dev)) / len(dev)


def propose_instructions(llm, train: list[dict[str, str]], n: int) -> list[str]:
    """Instructions the model writes after seeing a few training examples."""
    shown = "".join(f"Input: {row['input']}\nOutput: {row['output']}\n" for row in train[:5])
    reply = llm.complete([f"Here are examples of a task:\n{shown}\nWrite {n} different one-sentence instructions "
                          "that tell someone how to do this task, one per line."], max_new_tokens=40 * n)[0]
    lines = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", line).strip() for line in reply.splitlines()]
    return [line for line in lines if len(line) > 10][:n]


def optimize(llm, train: list[dict[str, str]], dev: list[dict[str, str]], instructions: list[str], *,
             shots: int = 3, trials: int = 4, propose: int = 0, metric: str = "exact", seed: int = 0,
             max_new_tokens: int = 16) -> dict[str, Any]:
    """Search instructions x few-shot sets; the best program and the before/after dev scores."""
    if metric not in METRICS:
        raise LmstackError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if not instructions:
        raise LmstackError("give at least one starting instruction")
    candidates = list(dict.fromkeys(instructions + (propose_instructions(llm, train, propose) if propose else [])))
    rng = random.Random(seed)
    demo_sets = [[]] + [rng.sample(train, min(shots, len(train))) for _ in range(trials)]
    tried = []
    for instruction in candidates:
        for demos in demo_sets:
            program = Program(instruction, demos)
            tried.append((evaluate_program(llm, program, dev, metric, max_new_tokens), program))
    before = tried[0][0]
    best_score, best = max(tried, key=lambda pair: pair[0])  # the first of equal scores: fewer demos, user's wording
    return {"before": before, "after": best_score, "metric": metric, "program": asdict(best),
            "candidates": len(tried), "instructions": candidates}
