"""Greedy parity with transformers on the real SmolLM2-135M-Instruct (same fp32 weights)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.real

from lmstack.generate.text import generate_text

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Overrides the tiny-model fixture of the same name: a real model uses every thread."""
    yield


@pytest.fixture(scope="module")
def smollm2_pair(smollm2):
    loaded = smollm2
    # Our converted directory is Hugging Face layout, so transformers reads the very same weights.
    hf = transformers.AutoModelForCausalLM.from_pretrained(loaded.path, dtype=torch.float32).eval()
    return loaded, hf


def hf_greedy(hf, prompt_ids: list[int], max_new_tokens: int, stop: list[int]) -> list[int]:
    """transformers' greedy continuation, cut after the first stop token as ours is."""
    out = hf.generate(
        torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
        pad_token_id=stop[0],
    )[0, len(prompt_ids):].tolist()
    ends = [i for i, token in enumerate(out) if token in stop]
    return out[: ends[0] + 1] if ends else out


def test_64_token_greedy_chat_equals_transformers(smollm2_pair):
    loaded, hf = smollm2_pair
    question = "Write a long story about a robot who learns to paint."
    result = generate_text(loaded, question, max_new_tokens=64)
    prompt_ids = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
    )
    assert result.prompt_tokens == len(prompt_ids)
    assert result.token_ids == hf_greedy(hf, prompt_ids, 64, list(loaded.tokenizer.stop_token_ids))
    assert result.new_tokens == 64 and result.finish_reason == "length"
    assert result.text == loaded.tokenizer.decode(result.token_ids, skip_special_tokens=True)


def test_batched_raw_prompts_equal_transformers(smollm2_pair):
    loaded, hf = smollm2_pair
    prompts = ["The capital of France is", "Once upon a time, in a small village far away,"]
    results = generate_text(loaded, prompts, raw=True, max_new_tokens=16)
    for prompt, result in zip(prompts, results):
        expected = hf_greedy(hf, loaded.tokenizer.encode(prompt), 16, list(loaded.tokenizer.stop_token_ids))
        assert result.token_ids == expected
