"""Recipes: YAML, overrides by key, and errors that list what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstack.errors import LmstackError
from lmstack.train.recipe import load_recipe, parse_override_tokens

RECIPES = Path(__file__).parents[2] / "recipes"


def test_yaml_then_cli_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  train: a.jsonl\noptimizer:\n  lr: 0.001\nrun:\n  steps: 10\n")
    recipe = load_recipe(path, ["--lr", "1e-4", "--run.steps=50", "--packing", "--batch-size", "2",
                                "--target_modules", "[q_proj, v_proj]"])
    assert recipe.optimizer.lr == 1e-4
    assert recipe.run.steps == 50 and recipe.run.batch_size == 2
    assert recipe.data.packing is True and recipe.data.train == "a.jsonl"
    assert recipe.method.target_modules == ["q_proj", "v_proj"]


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(LmstackError, match=r"unknown recipe key 'lrr'; valid keys: .*optimizer\.lr.*run\.steps"):
        load_recipe(None, ["--lrr", "1"])


def test_unknown_key_in_the_yaml_is_an_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("run:\n  stepz: 3\n")
    with pytest.raises(LmstackError, match="run.stepz"):
        load_recipe(path)


def test_bad_values_are_errors():
    with pytest.raises(LmstackError, match="method.type"):
        load_recipe(None, {"type": "prefix-tuning"})
    with pytest.raises(LmstackError, match=r"run.batch_size: Input should be greater than or equal to 1, got 0"):
        load_recipe(None, {"batch_size": 0})
    with pytest.raises(LmstackError, match="unexpected argument"):
        parse_override_tokens(["lr", "1"])


@pytest.mark.parametrize("name", ["sft-lora-smollm2", "sft-full-smollm2", "sft-qlora-smollm2", "dpo-lora-smollm2"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.model.ref == "smollm2-135m-instruct"
    assert recipe.data.train.startswith("lmstack:")
