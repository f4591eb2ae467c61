"""Evaluation: perplexity on held-out text and how often answers contain what is expected.

Names load on first use, so `lmstack eval --help` (and every other command) starts without torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {"perplexity": "lmstack.eval.likelihood", "evaluate_perplexity": "lmstack.eval.likelihood",
         "AnswerReport": "lmstack.eval.answers", "answer_match_rate": "lmstack.eval.answers",
         "evaluate_answers": "lmstack.eval.answers", "record_score": "lmstack.eval.scores"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmstack.eval' has no attribute {name!r}")
