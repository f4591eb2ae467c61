"""A pre-training recipe: its defaults, and what it needs checked before anything heavy loads
(no torch here, so a bad corpus or tokenizer is reported at once).

A from-scratch recipe gets pre-training defaults for every value it leaves unset (full training,
5% held out, the depth's learning rate, AdamW betas (0.9, 0.95), weight decay 0.1, a short
warm-up decaying to a tenth); what ran is what the run folder's recipe.yaml and the registry record.
"""

from __future__ import annotations

from lmstack.errors import LmstackError
from lmstack.inputs import check_dir
from lmstack.pretrain.corpus import corpus_files
from lmstack.pretrain.shards import is_shard_dir, read_index
from lmstack.pretrain.sizing import shape_for_depth
from lmstack.train.recipe import Recipe


def check_inputs(recipe: Recipe) -> None:
    """The corpus, the tokenizer and the model's shape, checked before anything loads."""
    data, model = recipe.data, recipe.model
    if not data.train:
        raise LmstackError("no pre-training data; pass --data (text files, a folder, JSONL, Parquet or shards)")
    if data.val:
        raise LmstackError("pre-training holds out data.val_fraction of the corpus; leave data.val unset")
    if data.max_len < 2:
        raise LmstackError(f"data.max_len must be at least 2 tokens (an input and its next token), got {data.max_len}")
    if is_shard_dir(data.train):
        read_index(data.train)
    else:
        corpus_files([data.train])
    if model.depth is None:
        if model.tokenizer or model.width or model.heads:
            raise LmstackError("model.tokenizer, width and heads size a model from scratch; give model.depth too")
        return
    if not model.tokenizer:
        raise LmstackError("a model trained from scratch needs a tokenizer; pass --tokenizer DIR "
                           "(make one with `lmstack tokenizer train`)")
    if not (check_dir(model.tokenizer, "tokenizer folder") / "tokenizer.json").is_file():
        raise LmstackError(f"{model.tokenizer} has no tokenizer.json; pass a folder made by `lmstack tokenizer train`")
    shape_for_depth(model.depth, model.width, model.heads)
    if recipe.method.type != "full":
        raise LmstackError(f"a model trained from scratch trains every weight; set method.type full, "
                           f"not {recipe.method.type}")


def with_defaults(recipe: Recipe) -> Recipe:
    """The recipe with pre-training's defaults where it leaves a value unset (explicit values win)."""
    shape = shape_for_depth(recipe.model.depth, recipe.model.width, recipe.model.heads) if recipe.model.depth else None
    steps = recipe.run.steps or 1000
    defaults = {
        "objective": {"loss": "pretrain"},
        "data": {"val_fraction": 0.05},
        "optimizer": {"betas": (0.9, 0.95), "weight_decay": 0.1, "warmup_steps": max(1, min(100, steps // 20)),
                      "min_lr_ratio": 0.1, **({"lr": shape.lr} if shape else {})},
        **({"method": {"type": "full"}, "model": {"ref": ""}} if shape else {}),
    }
    raw = recipe.model_dump(mode="json")
    for section, values in defaults.items():
        given = getattr(recipe, section).model_fields_set
        raw[section].update({key: value for key, value in values.items() if key not in given})
    raw["objective"]["loss"] = "pretrain"
    return Recipe.model_validate(raw)
