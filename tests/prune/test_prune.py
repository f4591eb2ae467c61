"""Pruning: each cut is exact (a pruned model equals the original with those parts zeroed), block
influence finds a do-nothing layer, and `prune_model` writes a model transformers loads, with its table."""

from __future__ import annotations

import json

import pytest
import torch

from lmstack.model.transformer import Transformer
from lmstack.model.weights import build_model
from lmstack.prune.importance import block_influence, channel_importance, head_importance
from lmstack.prune.surgery import drop_channels, drop_heads, drop_layers

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return Transformer(tiny_config).eval()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_dropping_heads_equals_silencing_them(model, tiny_config):
    importance = head_importance(model, IDS)
    config, state = drop_heads(tiny_config, _state(model), importance, per_group=1)
    assert config.num_heads == 2 and state["model.layers.0.self_attn.q_proj.weight"].shape == (32, 64)
    silenced = _state(model)
    for layer in range(tiny_config.num_layers):
        scores = importance[layer].view(2, 2)
        for group in range(2):
            head = group * 2 + int(scores[group].argmin())
            silenced[f"model.layers.{layer}.self_attn.o_proj.weight"][:, head * 16:(head + 1) * 16] = 0
    reference = build_model(tiny_config, silenced).eval()
    with torch.no_grad():
        torch.testing.assert_close(build_model(config, state).eval()(IDS), reference(IDS))


def test_dropping_channels_equals_silencing_them(model, tiny_config):
    importance = channel_importance(model, IDS)
    config, state = drop_channels(tiny_config, _state(model), importance, fraction=0.25)
    assert config.intermediate_size == 96
    silenced = _state(model)
    for layer in range(tiny_config.num_layers):
        dropped = importance[layer].argsort()[:32]
        silenced[f"model.layers.{layer}.mlp.down_proj.weight"][:, dropped] = 0
    with torch.no_grad():
        torch.testing.assert_close(build_model(config, state).eval()(IDS), build_model(tiny_config, silenced).eval()(IDS))


def test_block_influence_finds_a_layer_that_does_nothing(model, tiny_config):
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    influence = block_influence(model, IDS)
    assert influence[1] == pytest.approx(0.0, abs=1e-6) and influence[0] > 0.01
    config, state = drop_layers(tiny_config, _state(model), [1])
    with torch.no_grad():  # the layer was the identity, so the model without it computes the same
        torch.testing.assert_close(build_model(config, state).eval()(IDS), model(IDS))


def test_prune_model_writes_a_loadable_model_with_its_quality_table(tiny_hf_model, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmstack import registry
    from lmstack.hub.load import load_model
    from lmstack.prune.run import REPORT_FILE, prune_model

    out = tmp_path / "pruned"
    report = prune_model(str(tiny_hf_model), out, layers=1, heads_per_group=1, mlp_fraction=0.25, max_len=32,
                         heal_data="lmstack:general_heldout", heal_steps=3)
    steps = [row.step for row in report.rows]
    assert steps[0] == "original" and steps[-1] == "healed 3 steps" and len(steps) == 5
    parameters = [row.parameters for row in report.rows]
    assert parameters[0] > parameters[1] > parameters[2] > parameters[3] == parameters[4]
    assert json.loads((out / REPORT_FILE).read_text())["dropped_layers"] == report.dropped_layers
    ours = load_model(out, device="cpu", dtype="fp32")
    assert (ours.config.num_layers, ours.config.num_heads, ours.config.intermediate_size) == (3, 2, 96)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32).eval()
    ids = torch.tensor([ours.tokenizer.encode("The history of the city")])
    with torch.no_grad():
        torch.testing.assert_close(ours.model(ids), theirs(ids).logits, atol=1e-4, rtol=1e-4)
    artifact = registry.find_by_path(out)
    assert artifact.operation == "prune" and registry.get(artifact.parents[0]).path == tiny_hf_model.resolve()
    assert registry.scores(artifact.id)[-1].value == pytest.approx(report.rows[-1].perplexity)
