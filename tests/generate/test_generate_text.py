"""The text API on the tiny model with a word-level tokenizer: templates, streaming, stops, explain."""

from __future__ import annotations

import math

import pytest

from lmstack.errors import LmstackError
from lmstack.generate.generate import generate_ids
from lmstack.generate.text import chat_text, explanation_table, generate_text

PROMPT = "w5 w17 w33 w90"


def reference_tokens(loaded, prompt_ids, **kwargs):
    return generate_ids(loaded.model, [prompt_ids], stop_token_ids=loaded.tokenizer.stop_token_ids, **kwargs)[0]


def test_chat_prompt_uses_the_template(tiny_loaded):
    tok = tiny_loaded.tokenizer
    result = generate_text(tiny_loaded, PROMPT, system="w1 w2", max_new_tokens=12)
    messages = [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": PROMPT}]
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = reference_tokens(tiny_loaded, prompt_ids, max_new_tokens=12)
    assert result.token_ids == expected
    assert result.prompt_tokens == len(prompt_ids) and result.new_tokens == len(expected)
    assert chat_text(tiny_loaded, messages, max_new_tokens=12).token_ids == expected
    assert chat_text(tiny_loaded, messages[1:], system="w1 w2", max_new_tokens=12).token_ids == expected


def test_raw_prompt_and_result_fields(tiny_loaded):
    tok = tiny_loaded.tokenizer
    result = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=10)
    expected = reference_tokens(tiny_loaded, tok.encode(PROMPT), max_new_tokens=10)
    assert result.token_ids == expected
    reply = [t for t in expected if t not in tok.stop_token_ids]
    assert result.text == tok.decode(reply, skip_special_tokens=True)
    stopped = expected[-1] in tok.stop_token_ids
    assert result.finish_reason == ("stop" if stopped else "length")
    assert result.prefill_seconds > 0 and result.prefill_tokens_per_second > 0
    assert set(result.to_dict()) >= {"text", "finish_reason", "decode_tokens_per_second"}


def test_finish_reason_length_and_stop_token(tiny_loaded):
    long = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=30)
    first = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=3)
    assert first.finish_reason == "length" and first.token_ids == long.token_ids[:3]
    stop_id = long.token_ids[2]
    tiny_loaded.generation_config = {"eos_token_id": stop_id}  # the model's generation config adds it
    try:
        stopped = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=30)
    finally:
        tiny_loaded.generation_config = {}
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == long.token_ids[: long.token_ids.index(stop_id) + 1]


def test_streaming_sees_the_same_text(tiny_loaded):
    pieces: list[str] = []
    result = generate_text(tiny_loaded, PROMPT, stream=pieces.append, max_new_tokens=20)
    assert len(pieces) > 1 and "".join(pieces) == result.text


def test_stop_string_cuts_the_text(tiny_loaded):
    free = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=30)
    words = free.text.split()
    assert len(words) > 4
    stop = words[3]
    pieces: list[str] = []
    result = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=30, stop=[stop], stream=pieces.append)
    assert result.finish_reason == "stop"
    assert result.text == free.text[: free.text.index(stop)]
    assert "".join(pieces) == result.text
    assert len(result.token_ids) < len(free.token_ids)  # generation really stopped early


def test_explain_greedy_picks_the_argmax(tiny_loaded):
    result = generate_text(tiny_loaded, PROMPT, explain=True, explain_top_k=4, max_new_tokens=8)
    assert len(result.steps) == result.new_tokens
    for step in result.steps:
        probs = [c.probability for c in step.candidates]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-6
        assert step.chosen.token_id == step.candidates[0].token_id
        assert step.chosen.token_id in result.token_ids
    assert [s.chosen.token_id for s in result.steps] == result.token_ids
    assert explanation_table(result).row_count == len(result.steps)


def test_explain_sampling_shows_the_filtered_distribution(tiny_loaded):
    result = generate_text(tiny_loaded, PROMPT, explain=True, temperature=1.5, top_k=3, seed=1, max_new_tokens=8)
    for step in result.steps:
        probs = [c.probability for c in step.candidates]
        assert math.isclose(sum(probs[:3]), 1.0, rel_tol=1e-5) and probs[3:] == [0.0, 0.0]  # top_k=3 kept 3
        assert step.chosen.token_id in [c.token_id for c in step.candidates[:3]]


def test_seeded_sampling_is_reproducible(tiny_loaded):
    run = lambda seed: generate_text(tiny_loaded, PROMPT, temperature=1.0, seed=seed, max_new_tokens=16).token_ids
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_batch_of_prompts_equals_one_by_one(tiny_loaded):
    prompts = [PROMPT, "w1", "w8 w9 w10 w11 w12 w13"]
    batch = generate_text(tiny_loaded, prompts, max_new_tokens=10)
    assert [r.token_ids for r in batch] == [generate_text(tiny_loaded, p, max_new_tokens=10).token_ids for p in prompts]


def test_beam_search_through_text(tiny_loaded):
    prompt_ids = tiny_loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True
    )
    from lmstack.generate.processors import SamplingConfig

    expected = reference_tokens(tiny_loaded, prompt_ids, sampling=SamplingConfig(num_beams=3), max_new_tokens=10)
    assert generate_text(tiny_loaded, PROMPT, num_beams=3, max_new_tokens=10).token_ids == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"temprature": 0.5}, "unknown sampling setting"),
        ({"raw": True, "system": "w1"}, "a system prompt needs the chat template"),
        ({"num_beams": 2, "explain": True}, "set num_beams to 1"),
    ],
)
def test_user_errors(tiny_loaded, kwargs, message):
    with pytest.raises(LmstackError, match=message):
        generate_text(tiny_loaded, PROMPT, max_new_tokens=4, **kwargs)


def test_streaming_a_batch_is_an_error(tiny_loaded):
    with pytest.raises(LmstackError, match="streaming works with one prompt at a time"):
        generate_text(tiny_loaded, [PROMPT, PROMPT], stream=True)


def test_unmatched_stop_string_streams_everything(tiny_loaded):
    free = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=12)
    almost = free.text.split()[-1] + " w999"  # its start matches the last word, the rest never comes
    pieces: list[str] = []
    result = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=12, stop=almost, stream=pieces.append)
    assert result.text == free.text and "".join(pieces) == free.text
