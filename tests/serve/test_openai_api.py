"""The OpenAI API through the official `openai` client, on tiny random models (seconds per test)."""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest
import torch

MODEL = "test-model"
USER = [{"role": "user", "content": "w1 w2 w3 w4"}]


def chat(server, **kwargs):
    return server.client().chat.completions.create(**{"model": MODEL, "messages": USER, "max_tokens": 12} | kwargs)


def streamed_text(stream) -> tuple[list[str], list, object]:
    """Per-choice text, finish reasons and the usage of a streamed chat answer."""
    texts, finishes, usage = {}, {}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    return [texts[i] for i in sorted(texts)], [finishes[i] for i in sorted(finishes)], usage


def test_models_are_listed_and_an_unknown_one_is_a_404(word_server):
    client = word_server.client()
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL, "all-minilm-l6-v2"]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as error:
        chat(word_server, model="gpt-4")
    assert error.value.body["code"] == "model_not_found"


def test_streamed_and_unstreamed_greedy_answers_are_the_same(word_server):
    whole = chat(word_server, max_tokens=20)
    texts, finishes, usage = streamed_text(chat(word_server, max_tokens=20, stream=True))
    assert texts == [whole.choices[0].message.content] and whole.choices[0].message.content
    assert finishes == [whole.choices[0].finish_reason]
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens == len(
        word_server.app.state.backend.chat_prompt(USER))


def test_greedy_answers_are_the_same_alone_and_among_concurrent_requests(word_server):
    prompts = [[{"role": "user", "content": " ".join(f"w{(i * 7 + j) % 100}" for j in range(3 + i))}] for i in range(8)]
    alone = [chat(word_server, messages=p, max_tokens=16).choices[0].message.content for p in prompts]
    together: list[str | None] = [None] * len(prompts)

    def ask(i: int) -> None:
        together[i] = chat(word_server, messages=prompts[i], max_tokens=16, stream=i % 2 == 0).choices[0].message.content \
            if i % 2 else streamed_text(chat(word_server, messages=prompts[i], max_tokens=16, stream=True))[0][0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_answer_length_follows_max_tokens_or_max_completion_tokens(word_server):
    for key in ("max_tokens", "max_completion_tokens"):
        answer = chat(word_server, **{"max_tokens": None, key: 7})
        assert answer.usage.completion_tokens == 7 and answer.choices[0].finish_reason == "length"


def test_a_stop_string_cuts_the_answer_before_it(word_server):
    full = chat(word_server, max_tokens=24).choices[0].message.content
    words = full.split()
    assert len(words) > 4
    cut = chat(word_server, max_tokens=24, stop=[words[3]])
    assert cut.choices[0].message.content == full[: full.index(words[3])]
    assert cut.choices[0].finish_reason == "stop"


def test_n_choices_with_a_seed_are_reproducible(word_server):
    first = chat(word_server, n=3, temperature=1.0, seed=11, max_tokens=10)
    again = chat(word_server, n=3, temperature=1.0, seed=11, max_tokens=10)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1  # each choice draws with its own seed


def test_logprobs_are_the_models_own(word_server, word_bundle):
    answer = chat(word_server, max_tokens=3, logprobs=True, top_logprobs=3)
    entries = answer.choices[0].logprobs.content
    assert len(entries) == answer.usage.completion_tokens == 3
    prompt = word_server.app.state.backend.chat_prompt(USER)
    with torch.inference_mode():
        expected = word_bundle.model(torch.tensor([prompt]))[0, -1].float().log_softmax(-1)
    top = expected.topk(3)
    first = entries[0]
    assert first.logprob == pytest.approx(float(top.values[0]), abs=1e-4)  # greedy picks the most likely token
    assert [t.token for t in first.top_logprobs] == [word_bundle.tokenizer.decode([int(i)]) for i in top.indices]
    assert [t.logprob for t in first.top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-4)
    assert first.bytes == list(first.token.encode())


def test_completions_take_text_token_ids_and_lists(word_server, word_bundle):
    client = word_server.client()
    text = client.completions.create(model=MODEL, prompt="w5 w6 w7", max_tokens=5)
    ids = client.completions.create(model=MODEL, prompt=word_bundle.tokenizer.encode("w5 w6 w7"), max_tokens=5)
    assert text.choices[0].text == ids.choices[0].text and text.usage.completion_tokens == 5
    many = client.completions.create(model=MODEL, prompt=["w5 w6 w7", "w8 w9"], n=2, max_tokens=4, echo=True,
                                     logprobs=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text.startswith("w5 w6 w7")
    assert many.choices[0].text == many.choices[1].text  # greedy: both choices agree
    assert many.choices[2].text.startswith("w8 w9")
    assert len(many.choices[0].logprobs.tokens) == 4 and len(many.choices[0].logprobs.top_logprobs[0]) == 2
    stream = client.completions.create(model=MODEL, prompt="w5 w6 w7", max_tokens=5, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == text.choices[0].text


COLOR_SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                                 "count": {"type": "integer", "minimum": 0, "maximum": 99},
                                                 "ok": {"type": "boolean"}},
                "required": ["color", "count", "ok"], "additionalProperties": False}


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_always_validates(byte_server, stream):
    import jsonschema

    form = {"type": "json_schema", "json_schema": {"name": "colour", "schema": COLOR_SCHEMA}}
    answer = chat(byte_server, max_tokens=120, n=3, temperature=1.0, seed=3, response_format=form, stream=stream)
    texts = streamed_text(answer)[0] if stream else [c.message.content for c in answer.choices]
    for text in texts:
        jsonschema.validate(json.loads(text), COLOR_SCHEMA)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
    "additionalProperties": False}}}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_tool_calls_are_constrained_to_a_valid_call(byte_server, stream, choice):
    import jsonschema

    answer = chat(byte_server, max_tokens=80, tools=[WEATHER, TIME], tool_choice=choice, stream=stream)
    if stream:
        calls, finish = [], None
        for chunk in answer:
            for c in chunk.choices:
                calls += c.delta.tool_calls or []
                finish = c.finish_reason or finish
        call = calls[0].function
    else:
        finish, call = answer.choices[0].finish_reason, answer.choices[0].message.tool_calls[0].function
    assert finish == "tool_calls"
    tool = {"get_weather": WEATHER, "get_time": TIME}[call.name]
    if isinstance(choice, dict):
        assert call.name == "get_time"
    jsonschema.validate(json.loads(call.arguments), tool["function"]["parameters"])


def test_auto_tool_choice_gives_text_or_a_valid_call(byte_server):
    answers = chat(byte_server, max_tokens=60, tools=[WEATHER], n=6, temperature=1.0, seed=1).choices
    for choice in answers:
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            json.loads(choice.message.tool_calls[0].function.arguments)
        else:
            assert not choice.message.content.startswith("{")


def test_an_invalid_schema_is_a_400(byte_server):
    form = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError):
        chat(byte_server, response_format=form)


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": MODEL}, 400, "messages"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": MODEL, "messages": USER, "temperature": 3}, 400, "temperature"),
    ({"model": MODEL, "messages": USER, "temperature": "hot"}, 400, "temperature"),
    ({"model": MODEL, "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "messages": USER, "n": 1000}, 400, "n"),
    ({"model": MODEL, "messages": USER, "top_logprobs": 2}, 400, None),
    ({"model": MODEL, "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": MODEL, "messages": USER, "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "w1 " * 5000}]}, 400, "messages"),
    ({"model": MODEL, "messages": USER, "tool_choice": "required"}, 400, None),
    ({"model": MODEL, "messages": USER, "frequency_penalty": 0.5}, 400, None),
    ({"model": "nope", "messages": USER}, 404, "model"),
])
def test_malformed_chat_requests_get_an_openai_error(word_server, body, status, param):
    response = word_server.post("/v1/chat/completions", body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if param:
        assert error["param"] == param


def test_broken_json_and_wrong_routes_get_an_openai_error_and_the_server_keeps_serving(word_server):
    import httpx

    bad = httpx.post(word_server.url + "/v1/chat/completions", content=b'{"model": "x", "messages": [',
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    binary = httpx.post(word_server.url + "/v1/completions", content=bytes(range(256)))
    assert binary.status_code == 400
    assert httpx.get(word_server.url + "/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert httpx.get(word_server.url + "/v1/chat/completions").status_code == 405
    prompt = word_server.post("/v1/completions", {"model": MODEL, "prompt": [99999]})
    assert prompt.status_code == 400 and "vocabulary" in prompt.json()["error"]["message"]
    assert chat(word_server).choices[0].message.content


def test_an_api_key_is_required_when_set(word_bundle):
    from serving import live_server

    from lmstack.serve.limits import Limits

    with live_server(word_bundle, Limits(api_key="s3cret")) as server:
        with pytest.raises(openai.AuthenticationError):
            chat(server)
        assert server.client(api_key="s3cret").chat.completions.create(
            model=MODEL, messages=USER, max_tokens=3).usage.completion_tokens == 3
        import httpx

        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/ui/api/registry").status_code == 401


def test_oversized_bodies_are_a_413(word_bundle):
    from serving import live_server

    from lmstack.serve.limits import Limits

    with live_server(word_bundle, Limits(max_body_bytes=2000)) as server:
        big = server.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "w1 " * 1000}]})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        assert chat(server, max_tokens=2).usage.completion_tokens == 2


def test_a_full_server_answers_429_at_once_or_503_after_the_queue_timeout(word_bundle):
    from serving import live_server

    from lmstack.serve.limits import Limits

    with live_server(word_bundle, Limits(max_sequences=2, max_waiting=1, queue_timeout=0.5)) as server:
        admission = server.app.state.admission
        admission.in_use = 2  # as if two sequences were running
        results: dict[str, int] = {}
        waiting = threading.Thread(target=lambda: results.setdefault(
            "waited", server.post("/v1/chat/completions", {"model": MODEL, "messages": USER}).status_code))
        waiting.start()
        while not admission.waiting:
            time.sleep(0.01)
        busy = server.post("/v1/chat/completions", {"model": MODEL, "messages": USER})
        waiting.join()
        assert busy.status_code == 429 and busy.headers["retry-after"]
        assert results["waited"] == 503
        admission.in_use = 0
        assert server.post("/v1/chat/completions", {"model": MODEL, "messages": USER, "n": 3}).status_code == 400
        assert chat(server, max_tokens=2).usage.completion_tokens == 2
        metrics = server_metrics(server)
        assert metrics['lmstack_refused_total{reason="busy"}'] == 1
        assert metrics['lmstack_refused_total{reason="timeout"}'] == 1


def server_metrics(server) -> dict[str, float]:
    import httpx

    text = httpx.get(server.url + "/metrics").text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_a_client_that_disconnects_mid_stream_frees_its_sequence(word_server):
    import httpx

    backend = word_server.app.state.backend
    cancelled = []
    cancel = backend.engine.cancel
    backend.engine.cancel = lambda request_id: (cancelled.append(request_id), cancel(request_id))
    try:
        body = {"model": MODEL, "messages": USER, "max_tokens": 3000, "stream": True}
        with httpx.stream("POST", word_server.url + "/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
        deadline = time.monotonic() + 30
        while not cancelled or server_metrics(word_server)["lmstack_running_sequences"]:
            assert time.monotonic() < deadline, "the sequence was not freed"
            time.sleep(0.05)
    finally:
        backend.engine.cancel = cancel
    assert server_metrics(word_server)["lmstack_kv_blocks_used"] == 0
    assert chat(word_server, max_tokens=2).usage.completion_tokens == 2


def test_health_and_metrics(word_server):
    import httpx

    assert httpx.get(word_server.url + "/health").json()["status"] == "ok"
    chat(word_server, max_tokens=4)
    metrics = server_metrics(word_server)
    for name in ("lmstack_running_sequences", "lmstack_kv_blocks_used", "lmstack_tokens_per_second",
                 'lmstack_queue_length{stage="engine"}', 'lmstack_queue_length{stage="admission"}',
                 "lmstack_engine_time_to_first_token_seconds", "lmstack_time_to_first_token_seconds_count"):
        assert name in metrics
    assert metrics["lmstack_time_to_first_token_seconds_count"] >= 1
    assert metrics['lmstack_responses_total{code="200"}'] >= 1


def test_an_engine_failure_ends_the_requests_in_flight_and_the_server_recovers(word_server):
    backend = word_server.app.state.backend
    broken = backend.engine

    def fail() -> None:
        raise RuntimeError("boom")

    broken.step = fail
    response = word_server.post("/v1/chat/completions", {"model": MODEL, "messages": USER, "max_tokens": 4})
    assert response.status_code == 500 and "boom" in response.json()["error"]["message"]
    assert backend.engine is not broken and server_metrics(word_server)["lmstack_engine_failures_total"] == 1
    assert chat(word_server, max_tokens=3).usage.completion_tokens == 3
