"""Answers with citations, refusal, memory, knowledge graph and Ragas-style scores, around a
scripted model (so the test knows what the model said), and once on the real default model."""

from __future__ import annotations

import json
import re

import pytest
from scripted_llm import ScriptedLLM

from lmstack.rag.ask import REFUSAL, ask, assemble_context, citations_in
from lmstack.rag.chat import Memory, chat_turn
from lmstack.rag.evaluate import context_precision, faithfulness, statements
from lmstack.rag.graph import add_triples, graph_hits, parse_triples
from lmstack.rag.index import open_index


def _answer_citing_director(prompt: str) -> str:
    """Cite whichever numbered passage mentions Helena Vogt."""
    number = re.search(r"\[(\d+)\] \([^)]*\)\n[^\[]*Helena Vogt", prompt)
    return f"The lab director, Professor Helena Vogt [{number.group(1)}]." if number else "I don't know."


def test_answer_cites_the_passage_it_used(lab_index, minilm):
    store = open_index(lab_index)
    llm = ScriptedLLM(_answer_citing_director)
    answer = ask(store, minilm, llm, "Who must approve a flight?", k=3)
    assert not answer.refused
    assert [c["source"].rsplit("/", 1)[-1] for c in answer.citations] == ["travel.html"]
    assert "Helena Vogt" in answer.citations[0]["text"]
    assert answer.citations[0]["n"] == 1 + [h.source for h in answer.context].index(answer.citations[0]["source"])
    store.close()


def test_nothing_relevant_is_a_refusal_without_calling_the_model(lab_index, minilm):
    store = open_index(lab_index)
    llm = ScriptedLLM(lambda prompt: "made up")
    answer = ask(store, minilm, llm, "What is the capital of Peru?")
    assert answer.refused and answer.answer == REFUSAL and answer.citations == [] and llm.prompts == []
    store.close()


def test_multi_query_hyde_and_llm_rerank_reach_the_model(lab_index, minilm):
    store = open_index(lab_index)

    def reply(prompt: str) -> str:
        if prompt.startswith("Write 2 different search queries"):
            return "1. flight approval rules\n2. who signs off air travel"
        if prompt.startswith("Write a short passage"):
            return "Flights must be approved by the director of the lab."
        return _answer_citing_director(prompt)

    llm = ScriptedLLM(reply, yes=lambda prompt: 0.9 if "Helena Vogt" in prompt else 0.1)
    answer = ask(store, minilm, llm, "Who must approve a flight?", multi_query=2, hyde=True, reranker="llm", k=2)
    assert answer.queries == ["Who must approve a flight?", "flight approval rules", "who signs off air travel"]
    assert answer.context[0].source.endswith("travel.html") and answer.context[0].score == 0.9
    store.close()


def test_context_stops_at_the_window():
    from lmstack.rag.store import Hit

    hits = [Hit(i, f"/d/{i}.md", "word " * 300, 1.0) for i in range(10)]
    llm = ScriptedLLM(lambda p: "", context_window=1000)
    prompt, used = assemble_context(hits, "q?", llm, max_new_tokens=100)
    assert 1 <= len(used) < 10 and llm.count_tokens(prompt) < 1000 - 100
    assert citations_in("see [2] and [1, 2] and [99]", used) == [
        {"n": 2, "source": used[1].source, "text": used[1].text}, {"n": 1, "source": used[0].source, "text": used[0].text}]


def test_chat_memory_buffer_summary_and_recall(lab_index, minilm):
    store = open_index(lab_index)
    llm = ScriptedLLM(lambda prompt: "summary: asked about travel" if prompt.startswith("Update the summary")
                      else "Answer [1].")
    memory = Memory(buffer_turns=1, recall=1)
    chat_turn(store, minilm, llm, memory, "How much can a PhD student claim for conferences?")
    chat_turn(store, minilm, llm, memory, "Where are flammable solvents kept?")
    assert len(memory.buffer) == 1 and memory.summary == "summary: asked about travel"
    chat_turn(store, minilm, llm, memory, "And for postdocs, how much for conference travel?")
    last = next(p for p in reversed(llm.prompts) if "Sources:" in p)  # the answer prompt of the third turn
    assert "summary: asked about travel" in last  # rolling summary
    assert "Earlier exchanges that may matter:\nUser: How much can a PhD student claim" in last  # vector memory
    assert "Recent exchanges:\nUser: Where are flammable solvents kept?" in last  # buffer
    store.close()


def test_graph_neighbourhood_brings_in_linked_chunks(lab_index, minilm, tmp_path):
    assert parse_triples("Facts:\nF3 | holds | antibodies\nnot a fact\nF3 | is in | room B11") == [
        ("F3", "holds", "antibodies"), ("F3", "is in", "room B11")]
    copy = tmp_path / "g.sqlite"
    copy.write_bytes(lab_index.read_bytes())
    store = open_index(copy)
    freezer_chunk = next(i for i, (s, t, m) in store.chunks(range(1, 200)).items() if "F3" in t)
    add_triples(store, [("antibodies", "stored in", "F3", freezer_chunk), ("F3", "responsible", "Lena Okafor", freezer_chunk)])
    hits = graph_hits(store, "Who looks after the antibodies?", k=5)
    assert [h.id for h in hits] == [freezer_chunk]
    store.close()


def test_ragas_definitions_on_known_verdicts():
    verdicts = iter(["Yes", "No", "Yes"])
    judge = ScriptedLLM(lambda p: next(verdicts))
    score, failures = context_precision(judge, "q", "ref", ["c1", "c2", "c3"])
    assert score == pytest.approx((1 / 1 + 2 / 3) / 2) and failures == 0  # mean precision@k at the useful ranks
    replies = iter(["Yes.", "maybe", "No"])
    judge = ScriptedLLM(lambda p: next(replies))
    score, failures = faithfulness(judge, "Paris is big. It has a tower! Rome too?", ["ctx"])
    assert failures == 1 and score == 0.5  # the unparsable verdict is counted, not guessed
    assert statements("One. Two!\nThree?") == ["One.", "Two!", "Three?"]


@pytest.mark.real
def test_real_model_answers_in_the_json_shape(lab_index, smollm2):
    from typer.testing import CliRunner

    from lmstack.cli import app

    result = CliRunner().invoke(app, ["rag", "ask", str(lab_index), "Where are flammable solvents kept?", "--model",
                                      str(smollm2.source), "--json", "--max-new-tokens", "40", "-k", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data["answer"], str) and data["answer"] and not data["refused"]
    assert all(set(c) == {"n", "source", "text"} for c in data["citations"])
    assert any(c["source"].endswith("lab-safety.md") for c in data["context"])
