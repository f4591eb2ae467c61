"""Several LoRA adapters served at once: naming one as `model` gives that adapter's own answer."""

from __future__ import annotations

import threading

import pytest
import torch
from serving import live_server, make_adapter

PROMPT = [list(range(10, 24))]


@pytest.fixture(scope="module")
def adapters(word_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    return {name: (folder / name, make_adapter(word_bundle, folder / name, seed, base="tiny-words"))
            for name, seed in (("pirate", 1), ("poet", 2))}


def greedy(model, prompt, n: int) -> list[int]:
    from lmstack.generate.generate import generate_ids

    return generate_ids(model, [prompt], max_new_tokens=n)[0]


def test_each_adapter_answers_as_the_model_it_was_trained_into(word_bundle, adapters):
    references = {name: greedy(model, PROMPT[0], 12) for name, (_, model) in adapters.items()}
    references["test-model"] = greedy(word_bundle.model, PROMPT[0], 12)
    assert len({tuple(r) for r in references.values()}) == 3  # the adapters change the answer
    with live_server(word_bundle, adapters={name: path for name, (path, _) in adapters.items()}) as server:
        client = server.client()
        assert [m.id for m in client.models.list().data] == ["test-model", "pirate", "poet", "all-minilm-l6-v2"]
        answers: dict[str, list[int]] = {}

        def ask(name: str) -> None:  # all three at once: one batch, three adapters (none for the base)
            reply = client.completions.create(model=name, prompt=PROMPT[0], max_tokens=12, logprobs=0)
            answers[name] = [word_bundle.tokenizer.token_to_id(t) for t in reply.choices[0].logprobs.tokens]

        threads = [threading.Thread(target=ask, args=(name,)) for name in references]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == references


def test_a_broken_adapter_is_refused_before_serving(word_bundle, tmp_path):
    from lmstack.errors import LmstackError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 8}')
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LmstackError, match="safetensors"):
        with live_server(word_bundle, adapters={"broken": broken}):
            pass
