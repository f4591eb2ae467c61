"""Pre-training: next-token prediction on every token of a corpus, from scratch or continued.

From scratch (`model.depth` set), the model is sized by its depth for `model.tokenizer`
(`lmstack.pretrain.sizing`) and initialised at random; otherwise `model.ref` loads as for
fine-tuning and keeps learning (continued pre-training). `data.train` is a raw corpus (text
files, folders, JSONL, Parquet), cleaned, deduplicated and tokenized into shards under
`run.out_dir/data`, or a shard folder made by `lmstack data shards`. Each sample is a window of
`data.max_len` tokens read from the memory-mapped shards; the last `data.val_fraction` of the
windows are held out, and the context-free (unigram) perplexity on them is the bar to clear.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.hub.load import ModelBundle, load_model
from lmstack.model.transformer import Transformer
from lmstack.pretrain.recipe import check_inputs
from lmstack.pretrain.pipeline import prepare_shards
from lmstack.pretrain.shards import (TokenWindows, check_enough_tokens, is_shard_dir, read_index, tokenizer_hash,
                                     unigram_perplexity)
from lmstack.pretrain.sizing import chinchilla_tokens, config_for, initialise, parameter_count, shape_for_depth
from lmstack.tokenizer import Tokenizer
from lmstack.train.core import Plan
from lmstack.train.recipe import Recipe
from lmstack.train.sft import NextTokenLoss

__all__ = ["check_inputs", "initial_bundle", "plan", "collate_windows"]


def initial_bundle(recipe: Recipe) -> ModelBundle:
    """A randomly initialised model sized by `model.depth`, or the `model.ref` to continue from."""
    model = recipe.model
    if model.depth is None:
        return load_model(model.ref, device="cpu", dtype="fp32")
    tokenizer = Tokenizer.from_dir(model.tokenizer)
    config = config_for(shape_for_depth(model.depth, model.width, model.heads), tokenizer, recipe.data.max_len)
    torch.manual_seed(recipe.run.seed)
    network = Transformer(config)
    initialise(network)
    generation = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.stop_token_ids,
                  "pad_token_id": tokenizer.pad_token_id}
    return ModelBundle(model=network, tokenizer=tokenizer, config=config, generation_config=generation,
                       path=Path(model.tokenizer), name=f"d{model.depth}")


def shard_folder(bundle: ModelBundle, recipe: Recipe, tokenizer_id: str) -> tuple[Path, str]:
    """The shards to train on (made from the corpus under run.out_dir/data if need be), and their id."""
    data = recipe.data
    if is_shard_dir(data.train):
        index = read_index(data.train)
        if index.get("tokenizer_sha256") != tokenizer_hash(bundle.tokenizer):
            raise LmstackError(f"the shards in {data.train} were tokenized with another tokenizer than the model's; "
                               "prepare them again with this tokenizer")
        return Path(data.train), registry.id_for(data.train, kind="dataset")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LmstackError("under torchrun, prepare the shards first (`lmstack data shards CORPUS OUT --tokenizer "
                           "DIR`) and pass that folder as --data, so every process reads the same tokens")
    return prepare_shards([data.train], bundle.tokenizer, Path(recipe.run.out_dir) / "data", filter=data.filter,
                          dedup=data.dedup, tokenizer_id=tokenizer_id)


def plan(bundle: ModelBundle, recipe: Recipe) -> Plan:
    """Windows of `data.max_len` tokens from the shards, every position trained."""
    from_scratch = recipe.model.depth is not None
    tokenizer_id = registry.id_for(recipe.model.tokenizer, kind="tokenizer") if from_scratch else bundle.lineage_id()
    folder, shards_id = shard_folder(bundle, recipe, tokenizer_id)
    windows = TokenWindows(folder, recipe.data.max_len - 1)
    check_enough_tokens(windows, recipe.data.max_len - 1)
    if windows.index["vocab_size"] > bundle.config.vocab_size:
        raise LmstackError(f"the shards use {windows.index['vocab_size']} token ids but the model has "
                           f"{bundle.config.vocab_size}; use the model's own tokenizer")
    train, val = windows.split(recipe.data.val_fraction)
    metadata = {"parameters": parameter_count(bundle.config), "chinchilla_tokens": chinchilla_tokens(bundle.config),
                "corpus_tokens": windows.index["tokens"], "train_windows": len(train), "val_windows": len(val)}
    if len(val) and len(train):
        metadata["unigram_perplexity"] = unigram_perplexity(train, val, bundle.config.vocab_size)
    return Plan(NextTokenLoss(), train, val, collate_windows,
                parents=[tokenizer_id, shards_id] if from_scratch else [bundle.lineage_id(), shards_id],
                metadata=metadata)


def collate_windows(windows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Windows are their own labels: position t learns token t + 1 (NextTokenLoss shifts)."""
    batch = torch.stack(windows)
    return {"input_ids": batch, "labels": batch}
