"""The server on the real default model (SmolLM2-135M-Instruct), through the official `openai` client:
the same answers as the library, JSON and tool calls that parse, embeddings equal to the embedder's."""

from __future__ import annotations

import base64
import json
import threading

import numpy as np
import pytest
from serving import live_server

pytestmark = pytest.mark.real

QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "Why do cats purr?",
             "Write one sentence about the sea."]


@pytest.fixture(scope="module")
def references(smollm2):
    """Greedy answers from the library (`chat_text`), computed before the server shares the model."""
    from lmstack.generate.text import chat_text

    return [chat_text(smollm2, [{"role": "user", "content": q}], max_new_tokens=24).text for q in QUESTIONS]


@pytest.fixture(scope="module")
def server(smollm2, references):
    with live_server(smollm2, served_name="smollm2", kv_cache_mb=256.0) as live:
        yield live


def ask(server, question: str, **kwargs):
    return server.client().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], **{"max_tokens": 24} | kwargs)


def test_answers_equal_the_librarys_streamed_or_not_alone_or_concurrent(server, references):
    assert [ask(server, q).choices[0].message.content for q in QUESTIONS] == references
    answers: dict[int, str] = {}

    def streamed(i: int) -> None:
        chunks = ask(server, QUESTIONS[i % len(QUESTIONS)], stream=True)
        answers[i] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    threads = [threading.Thread(target=streamed, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [answers[i] for i in range(12)] == [references[i % len(QUESTIONS)] for i in range(12)]


def test_json_object_and_json_schema_answers_parse_and_validate(server):
    import jsonschema

    loose = ask(server, 'Reply in JSON with the key "capital": what is the capital of France?', max_tokens=60,
                response_format={"type": "json_object"})
    assert loose.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(loose.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 130}},
              "required": ["name", "age"], "additionalProperties": False}
    form = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    person = ask(server, "Invent a person and give their name and age.", max_tokens=60, response_format=form)
    jsonschema.validate(json.loads(person.choices[0].message.content), schema)


def test_a_required_tool_call_has_valid_arguments(server):
    import jsonschema

    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                       "required": ["city"], "additionalProperties": False}}}
    answer = ask(server, "What is the weather in Paris?", max_tokens=40, tools=[weather], tool_choice="required")
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), weather["function"]["parameters"])


def test_embeddings_equal_the_embedders_own(server):
    from lmstack.rag.embeddings import MiniLM

    texts = ["The freezer is in room B10.", "Backups run at night."]
    reply = server.client().embeddings.create(model="all-minilm-l6-v2", input=texts)
    expected = MiniLM().embed_batch(texts)
    assert np.allclose([d.embedding for d in reply.data], expected, atol=1e-5)
    assert reply.usage.prompt_tokens > 0
    packed = server.client().embeddings.create(model="all-minilm-l6-v2", input=texts[0], encoding_format="base64")
    vector = packed.data[0].embedding
    vector = np.frombuffer(base64.b64decode(vector), dtype=np.float32) if isinstance(vector, str) else np.array(vector)
    assert np.allclose(vector, expected[0], atol=1e-5)
