"""Our merges equal mergekit's on the same inputs and the same YAML config (mergekit is the reference)."""

from __future__ import annotations

import pytest
import torch
import yaml

from merge_models import read_weights

mergekit = pytest.importorskip("mergekit")

CONFIGS = {
    "linear": """
        merge_method: linear
        models:
          - {model: "{ft1}", parameters: {weight: 0.7}}
          - {model: "{ft2}", parameters: {weight: [0.1, 0.9]}}
          - {model: "{ft3}", parameters: {weight: [{filter: mlp, value: 0.5}, {value: 0.2}]}}
        dtype: float32
    """,
    "slerp": """
        merge_method: slerp
        base_model: "{ft1}"
        slices:
          - sources:
              - {model: "{ft1}", layer_range: [0, 4]}
              - {model: "{ft2}", layer_range: [0, 4]}
        parameters:
          t:
            - {filter: self_attn, value: [0, 0.5, 0.3, 0.7, 1]}
            - {filter: mlp, value: [1, 0.5, 0.7, 0.3, 0]}
            - value: 0.5
        dtype: float32
    """,
    "task_arithmetic": """
        merge_method: task_arithmetic
        base_model: "{base}"
        models:
          - {model: "{ft1}", parameters: {weight: 0.6}}
          - {model: "{ft2}", parameters: {weight: [1.0, 0.2]}}
        parameters: {lambda: 0.9}
        dtype: float32
    """,
    "ties": """
        merge_method: ties
        base_model: "{base}"
        models:
          - {model: "{ft1}", parameters: {weight: 0.5, density: 0.5}}
          - {model: "{ft2}", parameters: {weight: 0.3, density: [0.2, 0.8]}}
          - {model: "{ft3}", parameters: {weight: 0.4, density: 0.7}}
        parameters: {normalize: true}
        dtype: float32
    """,
    # DARE's drops are random, so only density 1 (no drop) can equal another implementation: what
    # remains is the weighting, the sign election (dare_ties) and the normalisation defaults.
    "dare_ties": """
        merge_method: dare_ties
        base_model: "{base}"
        models:
          - {model: "{ft1}", parameters: {weight: 0.7, density: 1.0}}
          - {model: "{ft2}", parameters: {weight: 0.4, density: 1.0}}
        dtype: float32
    """,
    "dare_linear": """
        merge_method: dare_linear
        base_model: "{base}"
        models:
          - {model: "{ft1}", parameters: {weight: 0.7, density: 1.0}}
          - {model: "{ft2}", parameters: {weight: [0.2, 0.6], density: 1.0}}
        dtype: float32
    """,
    "model_stock": """
        merge_method: model_stock
        base_model: "{base}"
        models:
          - model: "{ft1}"
          - model: "{ft2}"
          - model: "{ft3}"
        dtype: float32
    """,
    "passthrough": """
        merge_method: passthrough
        slices:
          - sources: [{model: "{ft1}", layer_range: [0, 3]}]
          - sources: [{model: "{ft2}", layer_range: [1, 4], parameters: {scale: [{filter: o_proj, value: 0.5}]}}]
        dtype: float32
    """,
}


def render(template: str, paths: dict[str, str]) -> dict:
    text = template
    for name, path in paths.items():
        text = text.replace("{" + name + "}", path)
    return yaml.safe_load(text)


def mergekit_merge(config: dict, out) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(config), str(out),
              options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))


@pytest.mark.parametrize("method", list(CONFIGS))
def test_merge_equals_mergekit(method, tiny_family, tmp_path):
    from lmstack.merge import merge

    config = render(CONFIGS[method], tiny_family)
    merge(config, tmp_path / "ours")
    mergekit_merge(config, tmp_path / "theirs")
    ours, theirs = read_weights(tmp_path / "ours"), read_weights(tmp_path / "theirs")
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert ours[name].shape == theirs[name].shape, name
        torch.testing.assert_close(ours[name], theirs[name], atol=2e-6, rtol=1e-5, msg=name)
    # the inputs differ enough that a wrong coefficient would show
    inputs = read_weights(tiny_family["ft1"])
    assert any(not torch.allclose(ours[n], inputs[n]) for n in ours if n in inputs)


def test_mixture_of_experts_equals_mergekit_moe(tiny_family, tmp_path):
    """cheap_embed routers (BOS-prefixed prompts, a negative prompt) and experts equal mergekit-moe's;
    mergekit's file (transformers 5's fused expert layout) loads in lmstack with transformers' logits."""
    import transformers
    from mergekit.moe.config import MoEMergeConfig
    from mergekit.options import MergeOptions
    from mergekit.scripts.moe import build

    from lmstack.hub.load import load_model
    from lmstack.merge import merge

    config = {"base_model": tiny_family["base"], "gate_mode": "cheap_embed", "experts_per_token": 2,
              "dtype": "float32", "experts": [
                  {"source_model": tiny_family["ft1"], "positive_prompts": ["t5 t6 t7", "t9 t5"],
                   "negative_prompts": ["t90 t91 t5"]},
                  {"source_model": tiny_family["ft2"], "positive_prompts": ["t40 t41 t42"]},
                  {"source_model": tiny_family["ft3"], "positive_prompts": ["t90 t91", "t92 t93 t94"]}]}
    merge(config, tmp_path / "ours")
    build(MoEMergeConfig.model_validate(config), str(tmp_path / "theirs"), MergeOptions(quiet=True), device="cpu")
    ours, theirs = read_weights(tmp_path / "ours"), read_weights(tmp_path / "theirs")
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=1e-5, msg=name)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "theirs", dtype=torch.float32).eval()
    loaded = load_model(str(tmp_path / "theirs"), device="cpu", dtype="fp32")
    ids = torch.tensor([[5, 6, 7, 40, 41, 90, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)
