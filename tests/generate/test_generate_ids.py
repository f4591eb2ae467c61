"""Token-level generation against transformers' generate() on the same tiny random Llama."""

from __future__ import annotations

import logging

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.generate.generate import Timings, generate_ids
from lmstack.generate.processors import SamplingConfig

pytest.importorskip("transformers")


def hf_new_tokens(hf, prompt: list[int], **kwargs) -> list[int]:
    """transformers' continuation of one prompt, without padding."""
    out = hf.generate(torch.tensor([prompt]), pad_token_id=0, **kwargs)[0, len(prompt):].tolist()
    eos = kwargs.get("eos_token_id") or []
    ends = [i for i, t in enumerate(out) if t in eos]
    return out[: ends[0] + 1] if ends else out


def test_greedy_equals_transformers(model_pair, prompts):
    ours, hf = model_pair
    for prompt in prompts:
        expected = hf_new_tokens(hf, prompt, max_new_tokens=24, do_sample=False, eos_token_id=None)
        assert generate_ids(ours, [prompt], max_new_tokens=24) == [expected]


def test_batched_left_padded_equals_one_by_one(model_pair, prompts):
    ours, _ = model_pair
    one_by_one = [generate_ids(ours, [p], max_new_tokens=16)[0] for p in prompts]
    assert generate_ids(ours, prompts, max_new_tokens=16) == one_by_one


def test_batched_transformers_left_padding_agrees(model_pair, prompts):
    ours, hf = model_pair
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert generate_ids(ours, prompts, max_new_tokens=16) == expected[:, width:].tolist()


def test_repetition_penalty_greedy_equals_transformers(model_pair, prompts):
    ours, hf = model_pair
    expected = hf_new_tokens(hf, prompts[0], max_new_tokens=20, do_sample=False, repetition_penalty=1.3, eos_token_id=None)
    got = generate_ids(ours, [prompts[0]], sampling=SamplingConfig(repetition_penalty=1.3), max_new_tokens=20)
    assert got == [expected]


def test_seeded_sampling_reproducible_and_equals_transformers(model_pair, prompts):
    ours, hf = model_pair
    settings = dict(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    sampling = SamplingConfig(**settings)
    first = generate_ids(ours, [prompts[0]], sampling=sampling, max_new_tokens=20, seed=7)
    assert generate_ids(ours, [prompts[0]], sampling=sampling, max_new_tokens=20, seed=7) == first
    assert generate_ids(ours, [prompts[0]], sampling=sampling, max_new_tokens=20, seed=8) != first
    # Same seed, same draws: transformers samples with the global generator in the same order.
    torch.manual_seed(7)
    assert first == [hf_new_tokens(hf, prompts[0], max_new_tokens=20, do_sample=True, eos_token_id=None, **settings)]


@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_beam_search_equals_transformers(model_pair, prompts, length_penalty, early_stopping):
    ours, hf = model_pair
    sampling = SamplingConfig(num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    greedy = generate_ids(ours, [prompts[0]], max_new_tokens=15)[0]
    for stop in ([], [greedy[3]], [greedy[3], greedy[7]]):  # with and without stop tokens
        expected = hf_new_tokens(
            hf, prompts[0], max_new_tokens=15, do_sample=False, num_beams=3,
            length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=stop or None,
        )
        assert generate_ids(ours, [prompts[0]], sampling=sampling, max_new_tokens=15, stop_token_ids=stop) == [expected]


def test_beam_search_batch_is_per_prompt(model_pair, prompts):
    ours, hf = model_pair
    sampling = SamplingConfig(num_beams=3)
    expected = [hf_new_tokens(hf, p, max_new_tokens=10, do_sample=False, num_beams=3, eos_token_id=None) for p in prompts]
    assert generate_ids(ours, prompts, sampling=sampling, max_new_tokens=10) == expected


def test_each_row_stops_on_its_stop_token(model_pair, prompts):
    ours, hf = model_pair
    free = generate_ids(ours, prompts, max_new_tokens=16)
    stop = free[0][4]  # a token the first row makes at step 5
    stopped = generate_ids(ours, prompts, max_new_tokens=16, stop_token_ids=[stop])
    for row, tokens in zip(free, stopped):
        end = row.index(stop) + 1 if stop in row else len(row)
        assert tokens == row[:end]
    assert stopped[0][-1] == stop and len(stopped[0]) < 16
    assert stopped[0] == hf_new_tokens(hf, prompts[0], max_new_tokens=16, do_sample=False, eos_token_id=[stop])


def test_streaming_callback_sees_every_token_and_can_stop_a_row(model_pair, prompts):
    ours, _ = model_pair
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def on_token(row: int, token: int) -> bool:
        seen[row].append(token)
        return row == 1 and len(seen[1]) == 3  # row 1 asks to stop after 3 tokens

    result = generate_ids(ours, prompts, max_new_tokens=8, on_token=on_token)
    assert [seen[r] for r in range(3)] == result
    assert len(result[1]) == 3 and len(result[0]) == len(result[2]) == 8


def test_timings_are_filled(model_pair, prompts):
    ours, _ = model_pair
    timings = Timings()
    generate_ids(ours, prompts, max_new_tokens=4, timings=timings)
    assert timings.prefill_seconds > 0 and timings.decode_seconds > 0


def test_prompt_longer_than_context_is_an_error(model_pair):
    ours, _ = model_pair  # context window 256
    with pytest.raises(LmstackError, match="the prompt is 300 tokens but the model's context window is 256"):
        generate_ids(ours, [[5] * 300], max_new_tokens=4)


def test_max_new_tokens_is_clamped_to_the_context(model_pair, caplog):
    ours, _ = model_pair
    with caplog.at_level(logging.WARNING):
        out = generate_ids(ours, [[5] * 250], max_new_tokens=20)
    assert len(out[0]) == 6
    assert "max_new_tokens lowered from 20 to 6" in caplog.text


@pytest.mark.parametrize(
    "prompts, kwargs, message",
    [
        ([], {}, "no prompts given"),
        ([[1, 2], []], {}, "a prompt has no tokens"),
        ([[1, 2]], {"max_new_tokens": 0}, "max_new_tokens must be >= 1, got 0"),
    ],
)
def test_invalid_requests_are_errors(model_pair, prompts, kwargs, message):
    ours, _ = model_pair
    with pytest.raises(LmstackError, match=message):
        generate_ids(ours, prompts, **kwargs)
