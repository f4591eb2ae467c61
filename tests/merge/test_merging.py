"""Merging on tiny models: parameter gradients and filters, sparsification, streaming (one tensor of each input
at a time), the output folder (loads in lmstack and transformers), lineage, and the checks that run before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from merge_models import fine_tune_of, random_state, read_weights, save_model, tiny_llama
from lmstack.errors import LmstackError
from lmstack.merge import merge
from lmstack.merge.config import load_config, value_at
from lmstack.merge.methods import task_arithmetic, top_magnitude_mask


def linear_config(paths: dict[str, str], **extra) -> dict:
    return {"merge_method": "linear", "models": [{"model": paths["ft1"], "parameters": {"weight": 1.0}},
                                                 {"model": paths["ft2"], "parameters": {"weight": 3.0}}], **extra}


# --- parameters ---------------------------------------------------------------------------------


def test_gradients_interpolate_over_depth_and_filters_pick_the_first_match():
    config = load_config({"merge_method": "slerp", "base_model": "a", "models": [{"model": "a"}],
                          "parameters": {"t": [{"filter": "mlp", "value": [0, 1, 0]}, {"value": 0.25}]}})
    t = config.parameters["t"]
    assert value_at(t, "model.layers.0.mlp.up_proj.weight", 0.0) == 0
    assert value_at(t, "model.layers.3.mlp.up_proj.weight", 0.25) == pytest.approx(0.5)
    assert value_at(t, "model.layers.6.mlp.up_proj.weight", 0.5) == pytest.approx(1.0)
    assert value_at(t, "model.layers.9.mlp.up_proj.weight", 0.75) == pytest.approx(0.5)
    assert value_at(t, "model.layers.2.self_attn.q_proj.weight", 0.1) == 0.25
    assert value_at([True, False], "x", 0.4) is True and value_at([True, False], "x", 1.0) is False


def test_top_magnitude_mask_keeps_exactly_the_k_largest():
    x = torch.randn(1000, 300)
    for k in (1, 17, 150_000, 299_999):
        mask = top_magnitude_mask(x, k)
        assert int(mask.sum()) == k
        assert x.abs()[mask].min() >= x.abs()[~mask].max()
    ties = torch.tensor([3.0, -1.0, 1.0, 1.0, 0.0, -1.0])
    assert top_magnitude_mask(ties, 3).tolist() == [True, True, True, False, False, False]


def test_ties_keeps_every_change_of_a_sparse_delta():
    """A tensor the fine-tune barely touched: its few changes are all among the top density fraction."""
    base = torch.zeros(100)
    tuned = base.clone()
    tuned[[3, 50, 97]] = torch.tensor([0.5, -0.25, 1.0])
    out = task_arithmetic(base, [tuned.clone()], [1.0], densities=[0.1], sparsify="magnitude", consensus=True,
                          normalize=True)
    assert torch.equal(out, tuned)


def test_dare_drops_about_one_minus_density_and_rescales_to_keep_the_delta():
    base, tuned = torch.zeros(400_000), torch.full((400_000,), 0.5)
    out = task_arithmetic(base, [tuned.clone()], [1.0], densities=[0.3], sparsify="random", rescale=True,
                          generators=[torch.Generator().manual_seed(0)])
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert out[kept].unique().tolist() == [pytest.approx(0.5 / 0.3)]
    assert out.mean().item() == pytest.approx(0.5, rel=0.02)  # the expected delta is unchanged


def test_dare_is_reproducible_by_seed(tiny_family, tmp_path):
    config = {"merge_method": "dare_ties", "base_model": tiny_family["base"],
              "models": [{"model": tiny_family[f"ft{i}"], "parameters": {"weight": 0.5, "density": 0.4}}
                         for i in (1, 2)]}
    merge(config, tmp_path / "a", seed=1)
    merge(config, tmp_path / "b", seed=1)
    merge(config, tmp_path / "c", seed=2)
    a, b, c = (read_weights(tmp_path / name) for name in "abc")
    name = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(a[name], b[name]) and not torch.equal(a[name], c[name])
    base = read_weights(tiny_family["base"])[name]
    # density 0.4 for each of two inputs: an entry keeps the base only where both dropped it
    assert (a[name] == base).float().mean().item() == pytest.approx(0.6 * 0.6, abs=0.03)


# --- the output folder --------------------------------------------------------------------------


def test_output_is_a_model_folder_that_transformers_loads(tiny_family, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmstack.hub.load import load_model

    result = merge(linear_config(tiny_family, dtype="bfloat16"), tmp_path / "merged")
    folder = tmp_path / "merged"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md",
            "mergekit_config.yml"} <= {p.name for p in folder.iterdir()}
    expected = {name: (1.0 * w1 + 3.0 * w2) / 4.0 for (name, w1), w2 in
                zip(read_weights(tiny_family["ft1"]).items(), read_weights(tiny_family["ft2"]).values())}
    weights = read_weights(folder)
    assert all(weights[n].dtype == torch.bfloat16 for n in weights)
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor.float(), expected[name], atol=1e-2, rtol=1e-2)
    ours = load_model(str(folder), device="cpu", dtype="fp32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 9, 2, 77, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours.model(ids), theirs(ids).logits, atol=1e-4, rtol=1e-4)
    card = (folder / "README.md").read_text()
    assert tiny_family["ft1"] in card and "linear" in card and "weight: 3.0" in card
    assert result.tensors == len(weights)


def test_a_merge_holds_one_tensor_of_each_input_at_a_time(tiny_family, tmp_path, monkeypatch):
    """Streaming: when a tensor is read, the tensors read for earlier outputs are already freed."""
    import weakref

    from lmstack.merge.sources import ModelSource

    read, alive, most = ModelSource.read, [], [0]

    def tracked(self, name, device):
        tensor = read(self, name, device)
        alive[:] = [ref for ref in alive if ref() is not None] + [weakref.ref(tensor)]
        most[0] = max(most[0], len(alive))
        return tensor

    monkeypatch.setattr(ModelSource, "read", tracked)
    config = {"merge_method": "ties", "base_model": tiny_family["base"],
              "models": [{"model": tiny_family[n], "parameters": {"weight": 0.5, "density": 0.5}}
                         for n in ("ft1", "ft2", "ft3")]}
    result = merge(config, tmp_path / "merged")
    assert result.tensors == len(read_weights(tiny_family["base"])) > 4
    assert most[0] == 4  # the base and three fine-tunes: one tensor each


def test_registry_records_every_parent(tiny_family, tmp_path):
    from lmstack import registry

    result = merge(linear_config(tiny_family), tmp_path / "merged")
    artifact = registry.get(result.registry_id)
    assert artifact.operation == "merge" and artifact.recipe["config"]["merge_method"] == "linear"
    parent_paths = {str(registry.get(p).path) for p in artifact.parents}
    assert parent_paths == {str(Path(tiny_family["ft1"]).resolve()), str(Path(tiny_family["ft2"]).resolve())}


def test_frankenmerge_stacks_layers_and_renumbers_them(tiny_family, tmp_path):
    config = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": tiny_family["ft1"], "layer_range": [0, 4]}]},
        {"sources": [{"model": tiny_family["ft2"], "layer_range": [2, 4]}]}]}
    merge(config, tmp_path / "tall")
    hf = json.loads((tmp_path / "tall" / "config.json").read_text())
    assert hf["num_hidden_layers"] == 6
    out, ft2 = read_weights(tmp_path / "tall"), read_weights(tiny_family["ft2"])
    assert torch.equal(out["model.layers.5.mlp.down_proj.weight"], ft2["model.layers.3.mlp.down_proj.weight"])
    assert torch.equal(out["model.norm.weight"], ft2["model.norm.weight"])  # post weights: last slice


# --- checks before any work ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory, tiny_family) -> dict[str, str]:
    root = tmp_path_factory.mktemp("odd")
    wide = tiny_llama(hidden_size=96, head_dim=24)
    more_vocab = tiny_llama(vocab_size=160)
    return {
        "wide": save_model(root / "wide", wide, random_state(wide, 0)),
        "vocab": save_model(root / "vocab", more_vocab, random_state(more_vocab, 0)),
        "qwen": save_model(root / "qwen", tiny_llama(family="qwen2"), random_state(tiny_llama(family="qwen2"), 0)),
    }


@pytest.mark.parametrize(("change", "message"), [
    (lambda c, p, o: c["models"][1].update(model=o["wide"]), "hidden_size 96"),
    (lambda c, p, o: c["models"][1].update(model=o["vocab"]), "vocab_size 160"),
    (lambda c, p, o: c["models"][1].update(model=o["qwen"]), "architecture 'qwen2'"),
    (lambda c, p, o: c.update(merge_method="slurp"), "unknown merge_method 'slurp'"),
    (lambda c, p, o: c["models"][0].update(parameters={"wieght": 1}), "no parameter 'wieght'"),
    (lambda c, p, o: c["models"][0].update(parameters={}), "parameter weight is not set"),
    (lambda c, p, o: c["models"][0].update(parameters={"weight": float("nan")}), "weight must be a finite number"),
    (lambda c, p, o: c.update(merge_method="ties", base_model=p["base"]) or c["models"][1].update(
        parameters={"density": 0.5}), "parameter weight is not set"),
    (lambda c, p, o: c.update(merge_method="slerp", base_model=p["base"], parameters={"t": 1.5}),
     "t must be between 0.0 and 1.0"),
    (lambda c, p, o: c.update(merge_method="slerp", parameters={"t": 0.5}) or [m.pop("parameters") for m in c["models"]],
     "needs a base_model"),
    (lambda c, p, o: c.update(dtype="float8"), "'float8' is not a dtype"),
    (lambda c, p, o: c.update(tokenizer_source="union"), "union"),
    (lambda c, p, o: c.update(slices=[{"sources": [{"model": p["ft1"], "layer_range": [0, 4]}]}]),
     "exactly one of `models` or `slices`"),
])
def test_bad_configs_are_refused_before_any_work(change, message, tiny_family, odd_models, tmp_path):
    config = linear_config(tiny_family)
    change(config, tiny_family, odd_models)
    with pytest.raises(LmstackError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_layer_ranges_are_checked(tiny_family, tmp_path):
    too_far = {"merge_method": "passthrough", "slices": [{"sources": [{"model": tiny_family["ft1"],
                                                                       "layer_range": [2, 9]}]}]}
    with pytest.raises(LmstackError, match="goes past its 4 layers"):
        merge(too_far, tmp_path / "out")
    uneven = {"merge_method": "slerp", "base_model": tiny_family["ft1"], "parameters": {"t": 0.5}, "slices": [
        {"sources": [{"model": tiny_family["ft1"], "layer_range": [0, 2]},
                     {"model": tiny_family["ft2"], "layer_range": [0, 3]}]}]}
    with pytest.raises(LmstackError, match="different lengths"):
        merge(uneven, tmp_path / "out")


def test_different_shapes_and_tensors_are_named(tmp_path):
    config = tiny_llama()
    base = random_state(config, 0)
    untied = tiny_llama(tie_word_embeddings=False)
    paths = [save_model(tmp_path / "tied", config, base),
             save_model(tmp_path / "untied", untied, {**base, "lm_head.weight": base["model.embed_tokens.weight"].clone()})]
    with pytest.raises(LmstackError, match="tie_word_embeddings"):
        merge({"merge_method": "linear", "models": [{"model": p, "parameters": {"weight": 1}} for p in paths]},
              tmp_path / "out")


def test_vocabularies_must_match(tmp_path, tiny_family):
    from merge_models import tiny_tokenizer

    config = tiny_llama()
    other = save_model(tmp_path / "other", config, fine_tune_of(random_state(config, 0), 5))
    tokenizer = tiny_tokenizer()
    tokenizer.backend.add_tokens(["t0-renamed"])  # one more piece: a different vocabulary, same size on paper
    tokenizer.save(tmp_path / "other")
    with pytest.raises(LmstackError, match="different vocabularies"):
        merge({"merge_method": "linear", "models": [{"model": tiny_family["ft1"], "parameters": {"weight": 1}},
                                                     {"model": other, "parameters": {"weight": 1}}]}, tmp_path / "out")


@pytest.mark.real
def test_a_catalog_model_merges_through_its_converted_gguf(tmp_path):
    """A catalog name (a GGUF) is read through its converted folder; a 4-layer slice of it loads and talks."""
    from lmstack.hub.load import converted_dir, load_model
    from lmstack.hub.pull import pull

    config = {"merge_method": "passthrough", "dtype": "bfloat16", "slices": [
        {"sources": [{"model": "smollm2-135m-instruct", "layer_range": [0, 2]}]},
        {"sources": [{"model": "smollm2-135m-instruct", "layer_range": [28, 30]}]}]}
    merge(config, tmp_path / "short")
    out, original = read_weights(tmp_path / "short"), read_weights(converted_dir(pull("smollm2-135m-instruct")))
    assert torch.equal(out["model.layers.2.self_attn.q_proj.weight"],
                       original["model.layers.28.self_attn.q_proj.weight"].bfloat16())
    short = load_model(str(tmp_path / "short"), device="cpu", dtype="fp32")
    assert short.config.num_layers == 4 and short.tokenizer.chat_template
    ids = torch.tensor([short.tokenizer.encode("The capital of France is")])
    assert torch.isfinite(short.model(ids)).all()
