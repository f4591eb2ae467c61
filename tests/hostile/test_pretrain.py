"""Hostile input for the pre-training, curation, synthesis and pruning commands: one clear line,
exit 1 (2 for a flag out of range), no traceback, and the user's files untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import refused, run, untouched, usage_error

PROSE = "The library opens at nine and closes at six, and on Sundays it stays closed all day long. " * 3


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(3):
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + PROSE)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    from lmstack.pretrain.tokenizer_training import train_bpe

    out = tmp_path_factory.mktemp("tok")
    train_bpe([PROSE] * 4, 300).save(out)
    return out


@pytest.fixture
def keep(tmp_path: Path) -> Path:
    folder = tmp_path / "keep"
    folder.mkdir()
    (folder / "precious.txt").write_text("do not delete")
    return folder


def _jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# --- lmstack tokenizer train -------------------------------------------------------------------------

def test_tokenizer_missing_corpus(home, tmp_path):
    refused(run(["tokenizer", "train", str(tmp_path / "nope.txt"), str(tmp_path / "out"), "--vocab-size", "1k"],
                home=home), "corpus file not found")


def test_tokenizer_empty_corpus(home, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    refused(run(["tokenizer", "train", str(tmp_path / "empty.txt"), str(tmp_path / "out"), "--vocab-size", "1k"],
                home=home), "is empty")


def test_tokenizer_binary_corpus(home, tmp_path):
    (tmp_path / "blob.txt").write_bytes(b"\x7fELF\x00\x00\x01binary")
    refused(run(["tokenizer", "train", str(tmp_path / "blob.txt"), str(tmp_path / "out"), "--vocab-size", "1k"],
                home=home), "looks binary")


def test_tokenizer_invalid_utf8(home, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    refused(run(["tokenizer", "train", str(tmp_path / "latin1.txt"), str(tmp_path / "out"), "--vocab-size", "1k"],
                home=home), "not valid UTF-8", "offset 3")


def test_tokenizer_vocabulary_smaller_than_the_bytes(home, corpus, tmp_path):
    refused(run(["tokenizer", "train", str(corpus), str(tmp_path / "out"), "--vocab-size", "200"], home=home),
            "byte-level vocabulary holds the 256 bytes")
    assert not (tmp_path / "out").exists()


def test_tokenizer_vocabulary_not_a_number(home, corpus, tmp_path):
    refused(run(["tokenizer", "train", str(corpus), str(tmp_path / "out"), "--vocab-size", "lots"], home=home),
            "not a number")


def test_tokenizer_non_empty_output(home, corpus, keep):
    with untouched(keep):
        refused(run(["tokenizer", "train", str(corpus), str(keep), "--vocab-size", "300"], home=home), "--overwrite")


def test_tokenizer_folder_without_text(home, tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(b"\x89PNG")
    refused(run(["tokenizer", "train", str(tmp_path / "pics"), str(tmp_path / "out"), "--vocab-size", "300"],
                home=home), "holds no text files")


def test_tokenizer_without_an_output(home, corpus):
    refused(run(["tokenizer", "train", str(corpus), "--vocab-size", "300"], home=home), "then the output folder")


# --- lmstack train pretrain / distill / landscape ------------------------------------------------------

def test_pretrain_without_data(home, tokenizer, tmp_path):
    refused(run(["train", "pretrain", "--tokenizer", str(tokenizer), "--depth", "1", "--out-dir", str(tmp_path / "r")],
                home=home), "no pre-training data")


def test_pretrain_missing_tokenizer(home, corpus, tmp_path):
    refused(run(["train", "pretrain", "--data", str(corpus), "--tokenizer", str(tmp_path / "nope"), "--depth", "1",
                 "--out-dir", str(tmp_path / "r")], home=home), "tokenizer folder not found")


def test_pretrain_tokenizer_folder_without_tokenizer(home, corpus, keep, tmp_path):
    refused(run(["train", "pretrain", "--data", str(corpus), "--tokenizer", str(keep), "--depth", "1",
                 "--out-dir", str(tmp_path / "r")], home=home), "has no tokenizer.json")


def test_pretrain_corpus_smaller_than_one_sequence(home, tokenizer, tmp_path):
    (tmp_path / "tiny.txt").write_text("A short text that is a few tokens long, nothing more than that here.")
    refused(run(["train", "pretrain", "--data", str(tmp_path / "tiny.txt"), "--tokenizer", str(tokenizer), "--depth",
                 "1", "--out-dir", str(tmp_path / "r"), "--max-len", "4096"], home=home), "fewer than one sequence")


def test_pretrain_width_not_divisible_by_heads(home, corpus, tokenizer, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {width: 100, heads: 3}\n")
    refused(run(["train", "pretrain", str(recipe), "--data", str(corpus), "--tokenizer", str(tokenizer), "--depth",
                 "1", "--out-dir", str(tmp_path / "r")], home=home), "model.width 100 is not divisible by model.heads 3")


def test_pretrain_depth_out_of_range(home, corpus, tokenizer, tmp_path):
    usage_error(run(["train", "pretrain", "--data", str(corpus), "--tokenizer", str(tokenizer), "--depth", "0"],
                    home=home), "--depth")


def test_pretrain_non_empty_out_dir(home, corpus, tokenizer, keep):
    with untouched(keep):
        refused(run(["train", "pretrain", "--data", str(corpus), "--tokenizer", str(tokenizer), "--depth", "1",
                     "--out-dir", str(keep)], home=home), "--overwrite")


def test_pretrain_bad_sizes(home, corpus, tokenizer, tmp_path):
    refused(run(["train", "pretrain", "--data", str(corpus), "--tokenizer", str(tokenizer), "--sizes", "two,three",
                 "--out-dir", str(tmp_path / "r")], home=home), "not a list of depths")


def test_distill_without_a_teacher(home, corpus, tokenizer, tmp_path):
    recipe = tmp_path / "distill.yaml"
    recipe.write_text(f"model: {{depth: 1, tokenizer: {tokenizer}}}\nmethod: {{type: full}}\ndata: {{train: {corpus}}}\n"
                      f"run: {{out_dir: {tmp_path / 'r'}}}\n")
    refused(run(["train", "distill", str(recipe)], home=home), "distillation needs a teacher")


def test_landscape_missing_data_before_the_model_loads(home, tmp_path):
    refused(run(["train", "landscape", "smollm2-135m-instruct", str(tmp_path / "nope"), str(tmp_path / "l.png")],
                home=home), "not found")


# --- lmstack data dedup / filter / decontaminate / synth / shards ---------------------------------------

def test_dedup_threshold_out_of_range(home, tmp_path):
    usage_error(run(["data", "dedup", "lmstack:identity_train", str(tmp_path / "o.jsonl"), "--threshold", "1.5"],
                    home=home), "--threshold")


def test_dedup_binary_dataset(home, tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b"\x00\x01\x02binary")
    refused(run(["data", "dedup", str(tmp_path / "d.jsonl"), str(tmp_path / "o.jsonl")], home=home), "looks binary")


def test_dedup_existing_output(home, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("keep me\n")
    with untouched(out):
        refused(run(["data", "dedup", "lmstack:identity_train", str(out)], home=home), "--overwrite")


def test_decontaminate_missing_eval_set(home, tmp_path):
    refused(run(["data", "decontaminate", "lmstack:identity_train", str(tmp_path / "o.jsonl"), "--eval",
                 str(tmp_path / "nope.jsonl")], home=home), "not found")
    assert not (tmp_path / "o.jsonl").exists()


def test_decontaminate_unknown_action(home, tmp_path):
    refused(run(["data", "decontaminate", "lmstack:identity_train", str(tmp_path / "o.jsonl"), "--eval",
                 "lmstack:identity_heldout", "--action", "shred"], home=home), "unknown action")


def test_filter_unknown_language(home, tmp_path):
    refused(run(["data", "filter", "lmstack:identity_train", str(tmp_path / "o.jsonl"), "--language", "klingon"],
                home=home), "--language")


def test_synth_needs_exactly_one_generator(home, tmp_path):
    refused(run(["data", "synth", "lmstack:synth_seeds", str(tmp_path / "o.jsonl")], home=home),
            "exactly one generator")


def test_synth_seed_without_instruction(home, tmp_path):
    seeds = _jsonl(tmp_path / "seeds.jsonl", [{"task": "no instruction here"}])
    refused(run(["data", "synth", seeds, str(tmp_path / "o.jsonl"), "--model", "smollm2-135m-instruct"], home=home),
            "line 1: a seed needs an 'instruction'")


def test_shards_missing_tokenizer(home, corpus, tmp_path):
    refused(run(["data", "shards", str(corpus), str(tmp_path / "s"), "--tokenizer", str(tmp_path / "nope")],
                home=home), "tokenizer folder not found")


# --- lmstack prune ------------------------------------------------------------------------------------

def test_prune_nothing_asked(home, tmp_path):
    refused(run(["prune", "smollm2-135m-instruct", str(tmp_path / "p")], home=home), "nothing to prune")


def test_prune_fraction_out_of_range(home, tmp_path):
    usage_error(run(["prune", "smollm2-135m-instruct", str(tmp_path / "p"), "--mlp-fraction", "1.5"], home=home),
                "--mlp-fraction")


def test_prune_into_a_non_empty_folder(home, keep):
    with untouched(keep):
        refused(run(["prune", "smollm2-135m-instruct", str(keep), "--layers", "1"], home=home), "--overwrite")


def test_synth_existing_output_before_the_model_loads(home, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("keep me\n")
    with untouched(out):
        refused(run(["data", "synth", "lmstack:synth_seeds", str(out), "--model", "no-such-model"], home=home),
                "--overwrite")


def test_synth_resume_without_progress(home, tmp_path):
    refused(run(["data", "synth", "lmstack:synth_seeds", str(tmp_path / "o.jsonl"), "--model", "no-such-model",
                 "--resume"], home=home), "nothing to resume")
