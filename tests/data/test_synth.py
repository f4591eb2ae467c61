"""Synthetic data: evolution, personas, verification by running tests and recomputing arithmetic,
dedup and decontamination on the way out, resume after a failure, and an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lmstack.data.synth import check_arithmetic, run_tests, synthesize
from lmstack.errors import LmstackError

SEEDS = [
    {"id": "sum", "kind": "code", "instruction": "Write add(a, b).", "tests": "assert add(2, 3) == 5"},
    {"id": "apples", "kind": "math", "instruction": "7 kg at 3 dollars per kg costs?", "answer": 21},
    {"id": "sky", "instruction": "Why is the sky blue?"},
]


def scripted(messages, seed):
    """A stand-in generator: evolves by appending a constraint; answers per task, some of them wrong."""
    text = messages[-1]["content"]
    if text.startswith("Rewrite the following task"):
        return text.split("Task: ", 1)[1] + " Keep it under 100 words."
    if "add(a, b)" in text:
        return "```python\ndef add(a, b):\n    return a + b\n```"
    if "7 kg" in text:
        return "7 * 3 = 21, so it costs 21"
    return "Sunlight scatters off air molecules; blue light scatters the most, so the sky looks blue."


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_verified_evolved_samples_with_personas(tmp_path):
    report = synthesize(_seeds(tmp_path), tmp_path / "out.jsonl", scripted, per_seed=2, evolve=1, progress=False)
    records = read(tmp_path / "out.jsonl")
    by_seed = {r["seed"]: r for r in records}
    assert by_seed["sum"]["verified"] == "tests" and by_seed["sum"]["evolution"] == []  # tested seeds keep their task
    assert by_seed["apples"]["verified"] == "arithmetic" and by_seed["apples"]["evolution"] in (["constraints"], ["deepen"])
    assert by_seed["sky"]["messages"][0]["content"].endswith("Keep it under 100 words.")
    assert all(r["persona"] for r in records)
    # two samples per seed give the same text here: the second copy of each is a duplicate
    assert report.accepted == 3 and report.rejected == {"duplicate": 3} and report.attempted == 6


def test_wrong_answers_are_rejected_by_reason(tmp_path):
    def wrong(messages, seed):
        text = messages[-1]["content"]
        if "add(a, b)" in text:
            return "```python\ndef add(a, b):\n    return a - b\n```"
        if "7 kg" in text:
            return "7 * 3 = 24, so it costs 24"
        return ""

    report = synthesize(_seeds(tmp_path), tmp_path / "out.jsonl", wrong, evolve=0, progress=False)
    assert report.accepted == 0
    assert report.rejected == {"tests_failed": 1, "wrong_arithmetic": 1, "empty_answer": 1}


def test_decontamination_on_the_way_out(tmp_path):
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text(json.dumps({"text": scripted([{"content": "sky"}], 0)}) + "\n")
    report = synthesize(_seeds(tmp_path), tmp_path / "out.jsonl", scripted, evolve=0, eval_sets=[str(evaluation)],
                        progress=False)
    assert report.rejected == {"contaminated": 1} and {r["seed"] for r in read(tmp_path / "out.jsonl")} == {"sum", "apples"}


def test_resume_continues_where_a_failure_stopped(tmp_path):
    calls = []

    def flaky(messages, seed):
        calls.append(messages[-1]["content"])
        if len(calls) == 3:
            raise LmstackError("the endpoint went away")
        return scripted(messages, seed)

    with pytest.raises(LmstackError, match="went away"):
        synthesize(_seeds(tmp_path), tmp_path / "out.jsonl", flaky, evolve=1, progress=False)
    assert not (tmp_path / "out.jsonl").exists() and (tmp_path / "out.jsonl.partial.jsonl").is_file()
    before = len(calls)
    report = synthesize(_seeds(tmp_path), tmp_path / "out.jsonl", flaky, evolve=1, resume=True, progress=False)
    # the code seed (one call) finished before the failure and is not generated again; the math and
    # general seeds take an evolution and an answer each
    assert report.accepted == 3 and len(calls) - before == 4
    assert not (tmp_path / "out.jsonl.partial.jsonl").exists()


def test_arithmetic_and_sandbox_checks():
    assert check_arithmetic("12 x 5 = 60, so 60 square metres", 60) is None
    assert check_arithmetic("(2 + 3) * 4 = 20", None) is None
    assert check_arithmetic("120 / 2 = 50", None) == "wrong_arithmetic"
    assert check_arithmetic("it is 59", 60) == "wrong_answer"
    assert run_tests("def f():\n    return 1", "assert f() == 1")
    home = os.environ.get("HOME", "")
    assert run_tests(f"import os\nassert os.environ.get('HOME') != {home!r}", "")  # the user's environment stays out
    assert not run_tests("while True:\n    pass", "", timeout=3)


class _FakeOpenAI(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = scripted(body["messages"], body.get("seed", 0))
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": reply}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_an_openai_compatible_endpoint_writes_the_data(tmp_path):
    from lmstack.data.synth import llm_generator
    from lmstack.hub.llm import EndpointLLM

    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = EndpointLLM(f"http://127.0.0.1:{server.server_port}/v1", "fake")
        generate = llm_generator(endpoint, max_new_tokens=64, temperature=0.0)
        report = synthesize(_seeds(tmp_path), tmp_path / "out.jsonl", generate, evolve=1, progress=False)
    finally:
        server.shutdown()
    assert report.accepted == 3 and {r["verified"] for r in read(tmp_path / "out.jsonl")} == {"tests", "arithmetic", None}


def _seeds(tmp_path) -> str:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    return str(path)


def test_a_generator_that_fails_at_once_leaves_no_files(tmp_path):
    def unreachable(messages, seed):
        raise LmstackError("the endpoint http://127.0.0.1:9/v1 failed")

    with pytest.raises(LmstackError, match="failed"):
        synthesize(_seeds(tmp_path), tmp_path / "out.jsonl", unreachable, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seeds.jsonl"]
