"""Multi-LoRA serving: PEFT adapters made by the `peft` library, batched together on one base model."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from lmstack.errors import LmstackError
from lmstack.generate.engine import Engine, EngineConfig, Request
from lmstack.peft.adapter_io import read_lora_factors

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def adapters(model_pair, tmp_path_factory) -> dict[str, str]:
    """Three peft adapters of the tiny Llama with random (not zero) B, on different layers."""
    _, hf = model_pair
    made = {}
    for i, targets in enumerate([["q_proj", "v_proj"], ["k_proj", "o_proj", "gate_proj", "down_proj"], ["up_proj"]]):
        torch.manual_seed(10 + i)
        model = peft.get_peft_model(copy.deepcopy(hf), peft.LoraConfig(r=4 + 2 * i, lora_alpha=16, target_modules=targets,
                                                                       init_lora_weights=False))
        path = tmp_path_factory.mktemp(f"adapter{i}")
        model.save_pretrained(path)
        made[f"a{i}"] = str(path)
    return made


@pytest.fixture
def base(model_pair):
    return copy.deepcopy(model_pair[0])  # the engine hooks the adapted layers: keep the shared model clean


def peft_greedy(hf, adapter_dir: str | None, prompt: list[int], n: int) -> list[int]:
    model = copy.deepcopy(hf) if adapter_dir is None else peft.PeftModel.from_pretrained(copy.deepcopy(hf), adapter_dir)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


def test_requests_with_different_adapters_share_one_batch_and_match_peft(model_pair, base, adapters, prompts):
    _, hf = model_pair
    engine = Engine(base, config=EngineConfig(kv_cache_mb=4), adapter_loader=read_lora_factors)
    names = [adapters["a0"], adapters["a1"], None, adapters["a2"]]
    handles = [engine.submit(Request(prompts[i % len(prompts)], max_new_tokens=12, adapter=name))
               for i, name in enumerate(names)]
    engine.step()
    assert engine.metrics().running == 4  # all four in one forward of the base model
    engine.run()
    for i, (name, handle) in enumerate(zip(names, handles)):
        assert handle.token_ids == peft_greedy(hf, name, prompts[i % len(prompts)], 12)
    plain = peft_greedy(hf, None, prompts[0], 12)
    assert handles[0].token_ids != plain  # the adapter really changed the output
    engine.close()


def test_adapters_load_on_demand_and_the_least_recently_used_is_dropped(base, adapters, prompts):
    loads = []

    def loader(name):
        loads.append(name)
        return read_lora_factors(name)

    engine = Engine(base, config=EngineConfig(kv_cache_mb=4, max_adapters=2), adapter_loader=loader)
    assert engine.metrics().adapters_loaded == []
    first = engine.generate([Request(prompts[0], max_new_tokens=6, adapter=adapters["a0"])])[0].token_ids
    engine.generate([Request(prompts[0], max_new_tokens=6, adapter=adapters["a1"])])
    engine.generate([Request(prompts[0], max_new_tokens=6, adapter=adapters["a2"])])
    assert engine.metrics().adapters_loaded == [adapters["a1"], adapters["a2"]]
    again = engine.generate([Request(prompts[0], max_new_tokens=6, adapter=adapters["a0"])])[0].token_ids
    assert again == first and loads == [adapters["a0"], adapters["a1"], adapters["a2"], adapters["a0"]]
    engine.close()


def test_generate_text_serves_an_adapter_by_name(tiny_loaded, model_pair, adapters):
    _, hf = model_pair
    loaded = SimpleNamespace(**vars(tiny_loaded))
    loaded.model = copy.deepcopy(tiny_loaded.model)
    loaded.lora_factors = read_lora_factors
    from lmstack.generate.text import generate_text

    result = generate_text(loaded, "w5 w17 w33", raw=True, max_new_tokens=10, adapter=adapters["a1"])
    prompt = loaded.tokenizer.encode("w5 w17 w33")
    expected = peft_greedy(hf, adapters["a1"], prompt, 10)
    stops = set(loaded.tokenizer.stop_token_ids)
    cut = next((i + 1 for i, t in enumerate(expected) if t in stops), len(expected))
    assert result.token_ids == expected[:cut]


def test_bad_adapters_are_refused_at_submit(base, tmp_path, prompts):
    engine = Engine(base, config=EngineConfig(kv_cache_mb=4), adapter_loader=read_lora_factors)
    with pytest.raises(LmstackError, match="adapter_config.json"):
        engine.submit(Request(prompts[0], adapter=str(tmp_path)))
    engine.close()
