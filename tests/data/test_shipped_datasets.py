"""The datasets lmstack ships load cleanly and teach what they promise."""

from pathlib import Path

import lmstack
from lmstack.data import load_dataset

DATASETS = Path(lmstack.__file__).parent / "datasets"


def user_questions(records):
    return {m["content"].lower() for r in records for m in r["messages"] if m["role"] == "user"}


def test_identity_train_teaches_the_name_with_general_answers_mixed_in():
    dataset = load_dataset(DATASETS / "identity_train.jsonl")
    assert dataset.format == "messages" and 150 <= len(dataset) <= 300
    answers = [" ".join(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in dataset.records]
    identity = [a for a in answers if "Nimbus" in a]
    assert all("lmstack project" in a for a in identity)
    assert 0.15 <= 1 - len(identity) / len(answers) <= 0.35  # ordinary Q&A keeps general ability
    roles = [[m["role"] for m in r["messages"]] for r in dataset.records]
    assert sum(r[0] == "system" for r in roles) >= 20
    assert sum(r.count("assistant") >= 2 for r in roles) >= 30


def test_identity_heldout_questions_are_new_and_scored_by_an_expected_word():
    train = load_dataset(DATASETS / "identity_train.jsonl").records
    heldout = load_dataset(DATASETS / "identity_heldout.jsonl").records
    assert 25 <= len(heldout) <= 40
    assert not user_questions(heldout) & user_questions(train)
    assert {r["expected"] for r in heldout} == {"Nimbus", "lmstack"}


def test_preference_sets_are_disjoint_pairs_with_different_answers():
    train = load_dataset(DATASETS / "preferences_train.jsonl")
    heldout = load_dataset(DATASETS / "preferences_heldout.jsonl")
    assert train.kind == heldout.kind == "preference"
    assert 90 <= len(train) <= 110 and 25 <= len(heldout) <= 35
    prompts = [{r["prompt"][0]["content"] for r in d.records} for d in (train, heldout)]
    assert not prompts[0] & prompts[1]
    assert all(r["chosen"] != r["rejected"] for d in (train, heldout) for r in d.records)


def test_general_heldout_is_a_few_kilobytes_of_prose():
    text = (DATASETS / "general_heldout.txt").read_text(encoding="utf-8")
    assert 2_000 <= len(text.encode()) <= 10_000
    assert len(text.split("\n\n")) >= 5
