"""The recipe the pre-training tests start from: a depth-2 model, short windows, CPU, fp32."""

from __future__ import annotations


def pretrain_recipe(corpus, tokenizer, out_dir, **overrides):
    from lmstack.train.recipe import load_recipe

    settings = {"data.train": str(corpus), "model.tokenizer": str(tokenizer), "model.depth": 2, "run.steps": 150,
                "run.out_dir": str(out_dir), "data.max_len": 64, "run.batch_size": 16, "model.device": "cpu",
                "model.precision": "fp32", **overrides}
    return load_recipe(None, settings)
