"""Evaluation: perplexity on held-out text and how often answers contain what is expected.

Names load on first use, so `lmstack eval --help` (and every other command) starts without torch.
"""

from lmstack.lazy import lazy_names

_LAZY = {"perplexity": "lmstack.eval.likelihood", "evaluate_perplexity": "lmstack.eval.likelihood",
         "AnswerReport": "lmstack.eval.answers", "answer_match_rate": "lmstack.eval.answers",
         "evaluate_answers": "lmstack.eval.answers", "record_score": "lmstack.eval.scores"}

__all__ = list(_LAZY)


__getattr__ = lazy_names(__name__, _LAZY)
