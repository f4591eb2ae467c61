"""A stand-in LLM for tests of the logic around a model (RAG, agents): replies are computed from the
prompt by a function the test gives, so the test knows exactly what the model "said"."""

from __future__ import annotations


class ScriptedLLM:
    """A stand-in LLM for tests of the logic around the model: replies come from `reply(prompt)`."""

    def __init__(self, reply, context_window: int = 2048, yes=None):
        self.reply, self.yes = reply, yes
        self.name = "scripted"
        self.context_window = context_window
        self.prompts: list[str] = []

    def complete(self, prompts, *, system=None, max_new_tokens=256, stop=None):
        self.prompts += prompts
        return [self.reply(prompt) for prompt in prompts]

    def yes_probability(self, prompts, *, system=None):
        return [self.yes(prompt) for prompt in prompts]

    def count_tokens(self, text: str) -> int:
        return len(text.split())
