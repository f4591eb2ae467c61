"""Curation: dedup (checked against datasketch and true Jaccard), rule filters, a model's quality
score, decontamination; each writes what it keeps and reports what it removed and why."""

from __future__ import annotations

import json

import pytest

from lmstack import registry
from lmstack.data.curate import decontaminate_dataset, dedup_dataset, filter_dataset
from lmstack.data.dedup import Deduplicator, shingles, signatures
from lmstack.data.filters import FilterRules, check_text
from lmstack.errors import LmstackError

BASE = ("Paris is the capital of France and sits on the river Seine, which flows through the city from "
        "east to west before it reaches the sea at Le Havre in Normandy.")


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_minhash_estimates_the_true_jaccard_like_datasketch_does():
    from datasketch import MinHash

    a, b = BASE, BASE.replace("east to west", "west to east").replace("Normandy", "northern France")
    sa, sb = shingles(a), shingles(b)
    true = len(sa & sb) / len(sa | sb)
    ours = signatures([a, b], num_perm=256)
    reference = [MinHash(num_perm=256) for _ in range(2)]
    for m, s in zip(reference, (sa, sb)):
        m.update_batch(list(s))
    assert ours[0].jaccard(ours[1]) == pytest.approx(true, abs=0.1)
    assert reference[0].jaccard(reference[1]) == pytest.approx(true, abs=0.1)


def test_dedup_removes_exact_and_near_copies_and_reports_clusters(tmp_path):
    records = [chat("Where is Paris?", BASE), chat("Where is Paris?", BASE),  # exact copy
               chat("where is  PARIS?", BASE),  # same after normalising case and spaces
               chat("Where is Paris?", BASE.replace("Normandy", "Normandy, France")),  # near copy
               chat("What is two plus two?", "Two plus two is four, a fact every child learns at school early.")]
    report = dedup_dataset(write(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl", threshold=0.7,
                           report_path=tmp_path / "report.json")
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert kept == [records[0], records[4]]
    assert report.removed == {"exact_duplicate": 2, "near_duplicate": 1}
    clusters = json.loads((tmp_path / "report.json").read_text())["details"]["clusters"]
    assert {(c["kind"], c["kept"], tuple(c["removed"])) for c in clusters} == {("exact", 0, (1, 2)), ("near", 0, (3,))}
    artifact = registry.find_by_path(tmp_path / "out.jsonl")
    assert artifact.operation == "dedup" and registry.get(artifact.parents[0]).path == (tmp_path / "in.jsonl").resolve()


def test_streaming_dedup_finds_duplicates_across_batches():
    deduplicator = Deduplicator(threshold=0.7)
    assert deduplicator.keep([BASE, "an unrelated sentence about the weather in spring and autumn"]) == [True, True]
    assert deduplicator.keep([BASE + " Indeed.", BASE.upper()]) == [False, False]


@pytest.mark.parametrize("text, reason", [
    ("too few words", "too_short"),
    ("{}[]<>#$%^&*" * 30 + " with some more words here", "symbols"),
    ("same line again\n" * 10 + "and one more different line of text", "repeated_lines"),
    (" ".join(["buy cheap pills now"] * 30), "repeated_ngrams"),
    ("12345 67890 13579 24680 11223 44556 77889", "few_letters"),
    ("Lorem ipsum dolor sit amet consectetur adipiscing elit sed eiusmod tempor", "language"),
    (BASE, None),
])
def test_each_rule_says_why(text, reason):
    assert check_text(text, FilterRules(language="en")) == reason


def test_filter_writes_the_kept_records_and_counts_reasons(tmp_path):
    records = [chat("Where is Paris?", BASE), chat("Hi", "ok"), chat("List symbols", "%%%% $$$$ #### @@@@ !!!! ^^^^ &&&& for you today")]
    report = filter_dataset(write(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl")
    assert [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()] == [records[0]]
    assert report.removed == {"too_short": 1, "symbols": 1}


def test_a_perplexity_quality_score_from_a_model(tmp_path, tiny_hf_model):
    from lmstack.eval.likelihood import perplexity
    from lmstack.hub.load import load_model
    import math

    records = [{"text": BASE}, {"text": "zq xv jj kk pp qq zz xx vv ww yy uu tt ss rr"}, {"text": BASE[::-1]}]
    bundle = load_model(tiny_hf_model, device="cpu", dtype="fp32")
    scores = [-math.log(perplexity(bundle, r["text"])) for r in records]
    threshold = sorted(scores)[1]
    report = filter_dataset(write(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl",
                            rules=FilterRules(min_words=0, max_symbol_ratio=0, min_letter_ratio=0),
                            scorer=f"perplexity:{tiny_hf_model}", min_score=threshold)
    kept = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert kept == [r for r, s in zip(records, scores) if s >= threshold]
    assert report.removed == {"low_score": 1} and report.details["score"]["min"] == pytest.approx(min(scores))


def test_a_judge_score_needs_a_threshold(tmp_path):
    with pytest.raises(LmstackError, match="--min-score"):
        filter_dataset(write(tmp_path / "in.jsonl", [{"text": BASE}]), tmp_path / "o.jsonl", scorer="judge:x")


@pytest.mark.parametrize("action", ["remove", "flag"])
def test_decontamination_finds_shared_ngrams(tmp_path, action):
    evaluation = write(tmp_path / "eval.jsonl", [chat("Question?", BASE)])
    records = [chat("Tell me about Paris", "As everyone knows, " + BASE[:110] + " and so on."),
               chat("What is two plus two?", "Two plus two is four, which every child learns at school.")]
    report = decontaminate_dataset(write(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl", [evaluation],
                                   ngram=8, action=action)
    kept = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert report.details["matches"][0]["record"] == 0 and len(report.details["matches"]) == 1
    if action == "remove":
        assert kept == [records[1]] and report.removed == {"contaminated": 1}
    else:
        assert kept[0]["contaminated"]["eval_set"] == evaluation and kept[1] == records[1] and report.flagged == 1


@pytest.mark.real
def test_a_judge_scores_a_right_answer_above_a_nonsense_one(smollm2_gguf):
    from lmstack.data.curate import load_scorer

    score = load_scorer("judge:smollm2-135m-instruct")
    question = {"role": "user", "content": "What is the capital of France?"}
    right = score({"messages": [question, {"role": "assistant", "content": "The capital of France is Paris."}]})
    nonsense = score({"messages": [question, {"role": "assistant", "content": "banana banana purple seven"}]})
    assert 0 < nonsense < right < 1
