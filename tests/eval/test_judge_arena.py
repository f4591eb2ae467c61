"""The judge (parsing, the position-swap rule, a real OpenAI client against a local endpoint,
garbage counted) and arena ratings against FastChat's logistic-regression fit."""

from __future__ import annotations

import json
import math
import random
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.eval.arena import arena, bradley_terry, online_elo, read_battles
from lmstack.eval.judge import (Question, combine, compare_answers, grade_answers, judge_models, parse_rating,
                                parse_verdict)

QUESTIONS = [Question("1", "What is the capital of France?", "Paris"), Question("2", "Name a primary colour.")]


def test_parsing_takes_the_last_marker_and_rejects_the_rest():
    assert parse_rating("Clear and correct. Rating: [[8]]") == 8
    assert parse_rating("[[3]] at first, but on reflection [[ 6.5 ]]") == 6.5
    assert parse_rating("Rating: 8") is None and parse_rating("[[11]]") is None and parse_rating("[[0]]") is None
    assert parse_verdict("B is more precise. [[B]]") == "B" and parse_verdict("[[C]]") == "C"
    assert parse_verdict("A wins") is None


def test_a_win_counts_only_when_both_orders_agree():
    assert combine("A", "B") == "model_a" and combine("B", "A") == "model_b"
    assert combine("A", "A") == "tie" and combine("C", "B") == "tie"  # position bias or a tie: a tie
    assert combine(None, "A") == "error"


def test_pairwise_comparison_swaps_positions_and_counts_garbage():
    def prefers_paris(messages):  # a fair judge: picks whichever answer mentions Paris
        text = messages[-1]["content"]
        a = text.split("[Assistant A's answer]")[1].split("[Assistant B's answer]")[0]
        return "[[A]]" if "Paris" in a else "[[B]]"

    rows, summary = compare_answers(prefers_paris, QUESTIONS[:1], ["Paris."], ["Lyon."])
    assert rows[0]["winner"] == "model_a" and summary["win_rate_a"] == 1.0
    rows, summary = compare_answers(lambda m: "[[A]]", QUESTIONS, ["x", "y"], ["z", "w"])  # always the first
    assert [r["winner"] for r in rows] == ["tie", "tie"] and summary["inconsistent_orders"] == 2
    rows, summary = compare_answers(lambda m: "I cannot decide.", QUESTIONS, ["x", "y"], ["z", "w"])
    assert summary["parse_failures"] == 2 and summary["win_rate_a"] is None


def test_single_grading_reports_parse_failures():
    replies = iter(["Good. Rating: [[9]]", "no rating here"])
    rows, summary = grade_answers(lambda m: next(replies), QUESTIONS, ["Paris", "Blue"])
    assert [r["rating"] for r in rows] == [9.0, None]
    assert summary == {"questions": 2, "rated": 1, "parse_failures": 1, "mean_rating": 9.0}


class ScriptedEndpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions answering from a script (garbage included)."""

    replies: list[str] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server interface
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ScriptedEndpoint.seen.append({"body": body, "auth": self.headers.get("Authorization")})
        reply = ScriptedEndpoint.replies[(len(ScriptedEndpoint.seen) - 1) % len(ScriptedEndpoint.replies)]
        payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                              "choices": [{"index": 0, "finish_reason": "stop",
                                           "message": {"role": "assistant", "content": reply}}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), ScriptedEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ScriptedEndpoint.seen = []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_endpoint_judge_compares_two_models_and_writes_battles(tiny_model_dir, endpoint, tmp_path, monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.setenv("JUDGE_KEY", "secret")
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"question": q.text}) + "\n" for q in QUESTIONS))
    # question 1: A then B (A wins); question 2: garbage then A
    ScriptedEndpoint.replies = ["[[A]]", "[[B]]", "the judge rambles", "[[A]]"]
    twin = shutil.copytree(tiny_model_dir, tmp_path / "tiny-twin")  # another model (the same weights)
    report = judge_models(str(tmp_path / "q.jsonl"), [str(tiny_model_dir), str(twin)],
                          judge_url=endpoint, judge_model="referee", judge_key_env="JUDGE_KEY",
                          output=tmp_path / "out", max_new_tokens=4)
    assert [r["winner"] for r in report.rows] == ["model_a", "error"]
    assert report.summary["parse_failures"] == 1 and report.summary["win_rate_a"] == 1.0
    assert ScriptedEndpoint.seen[0]["auth"] == "Bearer secret" and ScriptedEndpoint.seen[0]["body"]["temperature"] == 0
    battles = read_battles(str(tmp_path / "out" / "battles.jsonl"))
    assert [b["winner"] for b in battles] == ["model_a", "error"]
    assert len((tmp_path / "out" / "judgments.jsonl").read_text().splitlines()) == 2
    [score] = [s for s in registry.scores(battles[0]["model_a_id"]) if s.metric == "judge/win_rate"][-1:]
    assert score.details["settings"]["parse_failures"] == 1


def test_a_local_judge_that_writes_garbage_is_counted_not_dropped(tiny_model_dir, tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "Say hi.", "reference": "hi"}) + "\n")
    report = judge_models(str(tmp_path / "q.jsonl"), [str(tiny_model_dir)], judge=str(tiny_model_dir),
                          output=tmp_path / "out", max_new_tokens=3)  # a random model cannot write [[n]]
    assert report.summary == {"questions": 1, "rated": 0, "parse_failures": 1, "mean_rating": None}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["parse_failures"] == 1


def test_judge_settings_are_checked_before_loading(tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "hi"}) + "\n")
    with pytest.raises(LmstackError, match="name one judge"):
        judge_models(str(tmp_path / "q.jsonl"), ["m"], output=tmp_path / "out")
    with pytest.raises(LmstackError, match="needs --judge-model"):
        judge_models(str(tmp_path / "q.jsonl"), ["m"], judge_url="http://x", output=tmp_path / "out")
    with pytest.raises(LmstackError, match="one model .* or two"):
        judge_models(str(tmp_path / "q.jsonl"), ["a", "b", "c"], judge="a", output=tmp_path / "out")


def battles_from(strengths: dict[str, float], count: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    names = sorted(strengths)
    battles = []
    for _ in range(count):
        a, b = rnd.sample(names, 2)
        p = 1 / (1 + 10 ** ((strengths[b] - strengths[a]) / 400))
        draw = rnd.random()
        winner = "tie" if abs(draw - p) < 0.05 else "model_a" if draw < p else "model_b"
        battles.append({"model_a": a, "model_b": b, "winner": winner})
    return battles


def test_bradley_terry_equals_a_logistic_regression_fit():
    np = pytest.importorskip("numpy")
    linear_model = pytest.importorskip("sklearn.linear_model")
    battles = battles_from({"ada": 1100, "bob": 1000, "cy": 950, "dee": 800}, 600, seed=1)
    # FastChat's compute_mle_elo: one row per battle with +-log(10) for the two models; a tie is a
    # win each way, here weighted 1/2 each (a half win, as the arena counts it here).
    names = sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})
    rows, outcomes, weights = [], [], []
    for battle in battles:
        x = np.zeros(len(names))
        x[names.index(battle["model_a"])], x[names.index(battle["model_b"])] = math.log(10), -math.log(10)
        tie = battle["winner"] == "tie"
        for outcome in ([1, 0] if tie else [int(battle["winner"] == "model_a")]):
            rows.append(x)
            outcomes.append(outcome)
            weights.append(0.5 if tie else 1.0)
    fit = linear_model.LogisticRegression(fit_intercept=False, C=1e8, tol=1e-10, max_iter=10000)
    fit.fit(np.array(rows), np.array(outcomes), sample_weight=np.array(weights))
    reference = 400 * fit.coef_[0]
    reference = reference - reference.mean() + 1000
    ours = bradley_terry(battles, prior=0.0)
    assert [ours[n] for n in names] == pytest.approx(list(reference), abs=0.5)


def test_arena_table_has_intervals_elo_and_skips_failed_judgments():
    battles = battles_from({"ada": 1150, "bob": 1000, "cy": 900}, 300, seed=2)
    battles.append({"model_a": "ada", "model_b": "bob", "winner": "error"})
    table = arena(battles, rounds=200, seed=0)
    assert [r.model for r in table] == ["ada", "bob", "cy"]
    for row in table:
        assert row.lower <= row.rating <= row.upper
    assert sum(r.battles for r in table) == 2 * 300  # the failed judgment is not a battle
    elo = online_elo([b for b in battles if b["winner"] != "error"])
    assert [r.elo for r in table] == [elo[r.model] for r in table]
    assert elo["ada"] > elo["bob"] > elo["cy"]


def test_a_model_that_never_wins_still_gets_a_finite_rating(tmp_path):
    battles = [{"model_a": "strong", "model_b": "weak", "winner": "model_a"}] * 5
    ratings = bradley_terry(battles)
    assert ratings["strong"] > ratings["weak"] and all(math.isfinite(v) for v in ratings.values())
    (tmp_path / "b.jsonl").write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "maybe"}) + "\n")
    with pytest.raises(LmstackError, match="winner 'maybe'"):
        read_battles(str(tmp_path / "b.jsonl"))
