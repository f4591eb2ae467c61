"""Evaluation: perplexity on held-out text and how often answers contain what is expected."""

from lmstack.eval.answers import AnswerReport, answer_match_rate
from lmstack.eval.perplexity import perplexity

__all__ = ["AnswerReport", "answer_match_rate", "perplexity"]
