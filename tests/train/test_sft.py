"""SFT end to end on a tiny model: the loss falls and the result is saved and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmstack.train.recipe import load_recipe
from lmstack.train.run import train_recipe
from lmstack.train.sft import NextTokenLoss, plan


def sft_recipe(tmp_path: Path, chat_file: str, **overrides):
    settings = {"train": chat_file, "val": chat_file, "template": "chatml", "max_len": 64, "r": 8, "alpha": 16,
                "lr": 3e-3, "warmup_steps": 2, "steps": 30, "batch_size": 4, "eval_every": 10,
                "out_dir": str(tmp_path / "run"), "device": "cpu", **overrides}
    return load_recipe(None, settings)


def test_lora_sft_drives_the_loss_down_and_saves_a_peft_adapter(tmp_path, chat_file, tiny_bundle):
    from lmstack import registry
    from lmstack.peft import load_adapter

    loaded = tiny_bundle()
    result = train_recipe(sft_recipe(tmp_path, chat_file), bundle=loaded)

    history = result.train.history
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["val_loss"] < history[0]["loss"]
    adapter = result.output
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    run_dir = adapter.parent
    for name in ("metrics.jsonl", "metrics.png", "recipe.yaml"):
        assert (run_dir / name).is_file()
    try:
        import tensorboard  # noqa: F401  (an optional extra: event files only when it is installed)

        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    except ImportError:
        pass

    # The adapter reproduces the trained model when applied to a fresh copy of the base.
    fresh = tiny_bundle().model
    load_adapter(fresh, adapter)
    ids = torch.tensor([[256, 117, 115, 101, 114, 10, 72, 105]])
    torch.testing.assert_close(fresh(ids), loaded.model.eval()(ids))

    (artifact,) = registry.list_artifacts(kind="adapter")
    assert artifact.operation == "sft" and artifact.recipe["method"]["type"] == "lora"
    assert artifact.metadata["metrics"]["val_loss"] == history[-1]["val_loss"]


def test_full_sft_with_packing_writes_a_model_directory(tmp_path, chat_file, tiny_bundle):
    loaded = tiny_bundle()
    recipe = sft_recipe(tmp_path, chat_file, type="full", packing=True, max_len=128, batch_size=2, steps=4, lr=1e-3,
                        gradient_checkpointing=True)
    result = train_recipe(recipe, bundle=loaded)
    assert (result.output / "model.safetensors").is_file() and (result.output / "config.json").is_file()
    assert result.train.history[-1]["loss"] < result.train.history[0]["loss"]


def test_packed_rows_give_the_same_loss_as_padded_samples(tmp_path, chat_file, tiny_bundle):
    loaded = tiny_bundle()
    padded_plan = plan(loaded, sft_recipe(tmp_path, chat_file))
    packed_plan = plan(loaded, sft_recipe(tmp_path, chat_file, packing=True, max_len=256))
    objective, model = NextTokenLoss(), loaded.model.eval()
    padded = padded_plan.collate(list(padded_plan.train_samples))
    packed = packed_plan.collate(list(packed_plan.train_samples))
    assert objective.count(padded) == objective.count(packed)
    with torch.no_grad():
        torch.testing.assert_close(objective(model, padded)[0], objective(model, packed)[0], rtol=1e-5, atol=1e-4)
