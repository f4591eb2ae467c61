"""`lmstack rag chat`: conversational RAG with three kinds of memory.

- Buffer: the last `buffer_turns` exchanges, word for word (what a follow-up like "and when is
  it?" refers to).
- Rolling summary: an exchange pushed out of the buffer is folded by the LLM into a running
  summary, so the prompt stays bounded however long the conversation runs.
- Vector memory: every past exchange is embedded; the ones most similar to the new question are
  recalled, even from long ago and even after the summary has dropped their details.

Retrieval uses the new question together with the previous one, so follow-ups find passages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmstack.rag.ask import ANSWER_SYSTEM, REFUSAL, Answer, assemble_context, citations_in, retrieve
from lmstack.rag.embeddings import Embedder, embed
from lmstack.hub.llm import LLM
from lmstack.rag.store import Store

SUMMARY_PROMPT = ("Update the summary of a conversation with the new exchange. Keep names, numbers and "
                  "decisions; at most five sentences.\n\nSummary so far:\n{summary}\n\nNew exchange:\n{turn}\n\n"
                  "Updated summary:")


@dataclass
class Memory:
    buffer_turns: int = 4
    recall: int = 2  # past exchanges recalled by similarity
    buffer: list[tuple[str, str]] = field(default_factory=list)
    summary: str = ""
    archive: list[str] = field(default_factory=list)  # every exchange, for vector memory
    vectors: list[np.ndarray] = field(default_factory=list)

    def add(self, question: str, answer: str, llm: LLM, embedder: Embedder) -> None:
        turn = f"User: {question}\nAssistant: {answer}"
        self.archive.append(turn)
        self.vectors.append(embed(embedder, [turn])[0])
        self.buffer.append((question, answer))
        while len(self.buffer) > self.buffer_turns:
            old_q, old_a = self.buffer.pop(0)
            prompt = SUMMARY_PROMPT.format(summary=self.summary or "(empty)", turn=f"User: {old_q}\nAssistant: {old_a}")
            self.summary = llm.complete([prompt], max_new_tokens=120)[0]

    def recalled(self, query_vector: np.ndarray) -> list[str]:
        """Past exchanges most similar to the query, older than the buffer (the buffer is shown anyway)."""
        older = len(self.archive) - len(self.buffer)
        if older <= 0 or self.recall == 0:
            return []
        scores = np.stack(self.vectors[:older]) @ query_vector
        return [self.archive[i] for i in np.argsort(-scores)[: self.recall]]

    def preamble(self, query_vector: np.ndarray) -> str:
        parts = []
        if self.summary:
            parts.append(f"Summary of the conversation so far:\n{self.summary}")
        recalled = self.recalled(query_vector)
        if recalled:
            parts.append("Earlier exchanges that may matter:\n" + "\n\n".join(recalled))
        if self.buffer:
            parts.append("Recent exchanges:\n" + "\n".join(f"User: {q}\nAssistant: {a}" for q, a in self.buffer))
        return "\n\n".join(parts)


def chat_turn(store: Store, embedder: Embedder, llm: LLM, memory: Memory, question: str, *, k: int = 4) -> Answer:
    """Answer one message with retrieval and memory, then remember the exchange."""
    previous = memory.buffer[-1][0] if memory.buffer else ""
    search_text = f"{previous} {question}".strip()
    hits, _ = retrieve(store, embedder, llm, search_text, k=k)
    preamble = memory.preamble(embed(embedder, [question])[0])
    if not hits and not preamble:
        answer = Answer(REFUSAL, [], [], [search_text], refused=True)
    else:
        if hits:
            prompt, context = assemble_context(hits, question, llm, 200, preamble)
        else:  # nothing new in the documents; the conversation itself may answer
            prompt, context = f"{preamble}\n\nQuestion: {question}\nAnswer:", []
        text = llm.complete([prompt], system=ANSWER_SYSTEM, max_new_tokens=200)[0]
        answer = Answer(text, citations_in(text, context), context, [search_text])
    memory.add(question, answer.answer, llm, embedder)
    return answer


def chat_loop(store: Store, embedder: Embedder, llm: LLM, *, k: int = 4, buffer_turns: int = 4) -> None:
    """A terminal conversation; /exit or end of input stops it."""
    import typer

    memory = Memory(buffer_turns=buffer_turns)
    typer.echo("Ask about the indexed documents; /exit to leave.")
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            return
        if question in ("/exit", "/quit"):
            return
        if not question:
            continue
        answer = chat_turn(store, embedder, llm, memory, question, k=k)
        typer.echo(answer.answer)
        for citation in answer.citations:
            typer.echo(f"  [{citation['n']}] {citation['source']}")
