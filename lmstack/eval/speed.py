"""`lmstack eval speed MODEL`: measured generation speed, recorded for the leaderboard's `speed`.

Prefill and decode tokens/s of a greedy generation from a fixed prose prompt at batch 1, the best
of a few runs, with the device, precision and thread count it was measured with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from lmstack.errors import LmstackError
from lmstack.eval.scores import record_score
from lmstack.eval.task import SHIPPED_TASKS
from lmstack.hub.load import load_model

PROMPT_FILE = SHIPPED_TASKS / "lmstack_prose.txt"


def measure_speed(model: str, *, adapter: str | Path | None = None, device: str | None = None,
                  dtype: str | None = None, new_tokens: int = 64, repeats: int = 3) -> dict[str, float]:
    """{"prefill_tokens_per_second", "decode_tokens_per_second"}, best of `repeats`, recorded in the registry."""
    from lmstack.generate.text import generate_text

    if not 2 <= new_tokens <= 4096 or not 1 <= repeats <= 100:
        raise LmstackError(f"new_tokens must be in 2..4096 and repeats in 1..100, got {new_tokens} and {repeats}")
    bundle = load_model(model, device=device, dtype=dtype, adapter=adapter)
    prompt = PROMPT_FILE.read_text(encoding="utf-8").split("\n\n")[0]
    generate_text(bundle, prompt, raw=True, max_new_tokens=new_tokens, temperature=0.0)  # warm-up
    runs = [generate_text(bundle, prompt, raw=True, max_new_tokens=new_tokens, temperature=0.0) for _ in range(repeats)]
    best = {"prefill_tokens_per_second": max(r.prefill_tokens_per_second for r in runs),
            "decode_tokens_per_second": max(r.decode_tokens_per_second for r in runs)}
    settings = {"device": str(bundle.device), "dtype": str(next(bundle.model.parameters()).dtype).removeprefix("torch."),
                "threads": torch.get_num_threads(), "new_tokens": new_tokens, "batch": 1, "repeats": repeats}
    for key, value in best.items():
        record_score(bundle, f"speed/{key}", value, "lmstack:task/lmstack_prose", settings,
                     sha256=hashlib.sha256(PROMPT_FILE.read_bytes()).hexdigest())
    return best
