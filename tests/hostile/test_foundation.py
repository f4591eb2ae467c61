"""Hostile input to the foundation's commands: pull, models, generate, chat, export, data, train,
eval, registry. Every case: a clear one-line refusal (or a usage error naming the option), the
right exit code, no traceback, and the user's files untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import refused, run, untouched, usage_error

BAD_UTF8 = b'{"text": "caf\xe9"}\n'
BINARY = bytes(range(256)) * 4


def chat_file(path: Path, n: int = 8) -> Path:
    """A chat dataset in the tiny model's vocabulary (a, b, ab, cd, ...)."""
    records = [{"messages": [{"role": "user", "content": f"{w} {w}"}, {"role": "assistant", "content": w}]}
               for w in ("a", "b", "ab", "cd") * (n // 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def recipe(path: Path, train: Path | str, out: Path, **extra: str) -> Path:
    lines = ["model:", "  device: cpu", "  precision: fp32", "data:", f"  train: {train}", "  max_len: 32",
             "  template: chatml", "run:", "  batch_size: 2", "  steps: 2", f"  out_dir: {out}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def model_copy(tiny_model_dir: Path, where: Path) -> Path:
    copy = where / "model"
    shutil.copytree(tiny_model_dir, copy)
    return copy


def edit_config(model: Path, **changes) -> Path:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **changes}))
    return model


# --- model references ----------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "expected"), [
    ("", "no model given"),
    ("   ", "no model given"),
    ("no-such-model", "is not a model lmstack knows"),
    ("/nonexistent/model.gguf", "does not exist"),
    ("m-00000000", "no artifact 'm-00000000'"),
])
def test_unknown_model_references(home, ref, expected):
    refused(run(["generate", ref, "hi"], home=home), expected)


def test_a_folder_without_config_json(home, tmp_path):
    (tmp_path / "empty-model").mkdir()
    refused(run(["generate", str(tmp_path / "empty-model"), "hi"], home=home), "has no config.json")


def test_a_text_file_named_gguf(home, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    with untouched(fake):
        refused(run(["generate", str(fake), "hi"], home=home), "is not a GGUF file")


def test_a_truncated_gguf(home, tmp_path, tiny_gguf):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:1500])
    refused(run(["generate", str(cut), "hi"], home=home), "truncated")


def test_a_gguf_with_a_damaged_architecture_key(home, tmp_path, tiny_gguf):
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(tiny_gguf.read_bytes().replace(b"general.architecture", b"general.architectur_", 1))
    refused(run(["generate", str(damaged), "hi"], home=home), "general.architecture")


@pytest.mark.parametrize(("changes", "expected"), [
    ({"hidden_size": 16, "head_dim": 8}, "check hidden_size"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer"),
    ({"num_hidden_layers": 3}, "num_hidden_layers=3"),
    ({"intermediate_size": "big"}, "intermediate_size must be a positive integer"),
    ({"model_type": "gpt9"}, "unsupported architecture 'gpt9'"),
    ({"rms_norm_eps": -1}, "rms_norm_eps must be a positive number"),
])
def test_a_config_json_that_does_not_fit_its_weights(home, tmp_path, tiny_model_dir, changes, expected):
    model = edit_config(model_copy(tiny_model_dir, tmp_path), **changes)
    with untouched(model):
        refused(run(["generate", str(model), "hi"], home=home), expected)


@pytest.mark.parametrize(("content", "expected"), [
    (b"{not json", "is not valid JSON"),
    (b'{"model_type": "llama", "x": "caf\xe9"}', "is not valid UTF-8"),
    (b"[1, 2]", "must hold a JSON object"),
])
def test_a_damaged_config_json(home, tmp_path, tiny_model_dir, content, expected):
    model = model_copy(tiny_model_dir, tmp_path)
    (model / "config.json").write_bytes(content)
    refused(run(["generate", str(model), "hi"], home=home), expected)


def test_damaged_weights(home, tmp_path, tiny_model_dir):
    model = model_copy(tiny_model_dir, tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    refused(run(["generate", str(model), "hi"], home=home), "missing or corrupt")


def test_a_damaged_tokenizer(home, tmp_path, tiny_model_dir):
    model = model_copy(tiny_model_dir, tmp_path)
    (model / "tokenizer.json").write_text('{"model": 5}')
    refused(run(["generate", str(model), "hi"], home=home), "tokenizer.json")


# --- prompts, standard input and sampling values -------------------------------------------------


def test_a_prompt_that_is_not_utf8(home, tiny_model_dir):
    refused(run(["generate", str(tiny_model_dir), b"caf\xe9"], home=home), "prompt is not valid UTF-8")


def test_stdin_that_is_not_utf8(home, tiny_model_dir):
    refused(run(["generate", str(tiny_model_dir), "-"], home=home, stdin=b"caf\xe9 \xff"),
            "standard input is not valid UTF-8")


def test_generate_with_stdin_closed(home, tiny_model_dir):
    refused(run(["generate", str(tiny_model_dir)], home=home, closed_stdin=True), "standard input is closed")


def test_chat_with_stdin_closed(home, tiny_model_dir):
    refused(run(["chat", str(tiny_model_dir)], home=home, closed_stdin=True), "standard input, which is closed")


def test_a_chat_line_that_is_not_utf8_is_skipped(home, tiny_model_dir):
    result = run(["chat", str(tiny_model_dir), "-n", "2"], home=home, stdin=b"caf\xe9\n/exit\n",
                 separate_process=True)
    assert result.returncode == 0, result.stderr
    assert b"not valid UTF-8" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize(("flags", "expected"), [
    (["--seed", "18446744073709551616"], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["-n", "0"], "--max-new-tokens"),
    (["-n", "many"], "--max-new-tokens"),
])
def test_out_of_range_generation_flags_are_usage_errors(home, tiny_model_dir, flags, expected):
    usage_error(run(["generate", str(tiny_model_dir), "hi", *flags], home=home), expected)


@pytest.mark.parametrize(("flags", "expected"), [
    (["--top-p", "1.5"], "top_p must be in (0, 1], got 1.5"),
    (["--top-p", "0"], "top_p must be in (0, 1]"),
    (["-t", "nan"], "temperature must be a finite number"),
    (["-t", "-1"], "temperature must be >= 0"),
    (["--min-p", "2"], "min_p must be in [0, 1]"),
    (["--top-k", "-3"], "top_k must be an integer >= 0"),
    (["--repetition-penalty", "0"], "repetition_penalty must be > 0"),
    (["--repetition-penalty", "inf"], "repetition_penalty must be a finite number"),
    (["--num-beams", "0"], "num_beams must be an integer >= 1"),
    (["--num-beams", "2", "-t", "0.7"], "runs beam search, which does not sample"),
    (["--template", "nonsense"], "unknown chat template"),
    (["--dtype", "int3"], "unknown dtype 'int3'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:0"], "no CUDA GPU"),
])
def test_bad_generation_settings(home, tiny_model_dir, flags, expected):
    refused(run(["generate", str(tiny_model_dir), "hi", *flags], home=home), expected)


def test_bad_sampling_values_are_refused_before_the_model_loads(home):
    # The model does not exist: the sampling error must come first.
    refused(run(["generate", "/nonexistent/model", "hi", "--top-p", "7"], home=home), "top_p must be in (0, 1]")


def test_a_prompt_longer_than_the_context(home, tiny_model_dir):
    refused(run(["generate", str(tiny_model_dir), "ab " * 200, "--raw"], home=home), "context window is 64")


# --- export ---------------------------------------------------------------------------------------


def test_export_into_a_non_empty_folder_is_refused_and_keeps_it(home, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with untouched(out):
        refused(run(["export", str(tiny_model_dir), str(out)], home=home), "--overwrite")


def test_export_with_overwrite_replaces_the_folder(home, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    result = run(["export", str(tiny_model_dir), str(out), "--overwrite"], home=home)
    assert result.returncode == 0, result.stderr
    assert (out / "config.json").is_file() and not (out / "old.txt").exists()


def test_export_onto_a_file(home, tmp_path, tiny_model_dir):
    target = tmp_path / "file.txt"
    target.write_text("a file")
    with untouched(target):
        refused(run(["export", str(tiny_model_dir), str(target)], home=home), "is a file")


def test_export_below_a_file(home, tmp_path, tiny_model_dir):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with untouched(blocker):
        refused(run(["export", str(tiny_model_dir), str(blocker / "out")], home=home), "is a file, not a folder")


def test_export_where_nothing_can_be_written(home, tiny_model_dir):
    refused(run(["export", str(tiny_model_dir), "/proc/lmstack-test/out"], home=home))


@pytest.mark.parametrize(("flags", "expected"), [
    (["--format", "onnx"], "unknown export format 'onnx'"),
    (["--dtype", "int8"], "unknown export dtype 'int8'"),
])
def test_bad_export_settings_before_loading(home, tmp_path, flags, expected):
    refused(run(["export", "/nonexistent/model", str(tmp_path / "o"), *flags], home=home), expected)


# --- data convert and inspect -------------------------------------------------------------------


def test_convert_onto_an_existing_folder_keeps_it(home, tmp_path):
    source = chat_file(tmp_path / "in.jsonl")
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "x.txt").write_text("x")
    with untouched(folder, source):
        refused(run(["data", "convert", str(source), str(folder), "--to", "sharegpt"], home=home), "is a folder")


def test_convert_onto_an_existing_file_needs_overwrite(home, tmp_path):
    source, target = chat_file(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    target.write_text("mine\n")
    with untouched(target):
        refused(run(["data", "convert", str(source), str(target), "--to", "sharegpt"], home=home), "--overwrite")
    result = run(["data", "convert", str(source), str(target), "--to", "sharegpt", "--overwrite"], home=home)
    assert result.returncode == 0 and "conversations" in target.read_text()


def test_convert_onto_itself(home, tmp_path):
    source = chat_file(tmp_path / "in.jsonl")
    with untouched(source):
        refused(run(["data", "convert", str(source), str(source), "--to", "sharegpt", "--overwrite"], home=home),
                "is the input file")


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.jsonl", None, "dataset not found"),
    ("empty.jsonl", b"", "is empty"),
    ("binary.jsonl", BINARY, "looks binary"),
    ("latin1.jsonl", BAD_UTF8, "is not valid UTF-8: byte 0xe9"),
    ("broken.jsonl", b'{"text": "ok"}\n{oops\n', "line 2: invalid JSON"),
    ("list.json", b'{"not": "a list"}', "must be a list of objects"),
    ("data.txt", b"plain text", "unsupported dataset type '.txt'"),
    ("bad.parquet", b"PAR1 not really", "cannot read Parquet"),
    ("schema.jsonl", b'{"messages": "not a list"}\n', "messages"),
])
def test_convert_bad_datasets(home, tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    refused(run(["data", "convert", str(path), str(tmp_path / "out.jsonl"), "--to", "messages"], home=home), expected)
    assert not (tmp_path / "out.jsonl").exists()


def test_convert_a_folder_given_as_dataset(home, tmp_path):
    refused(run(["data", "convert", str(tmp_path), str(tmp_path / "o.jsonl"), "--to", "messages"], home=home),
            "is a folder; the dataset must be a file")


def test_convert_to_an_unknown_format(home, tmp_path):
    source = chat_file(tmp_path / "in.jsonl")
    refused(run(["data", "convert", str(source), str(tmp_path / "o.jsonl"), "--to", "yaml"], home=home),
            "Cannot convert to 'yaml'")


def test_inspect_plot_onto_a_folder_keeps_it(home, tmp_path, tiny_model_dir):
    source, folder = chat_file(tmp_path / "in.jsonl"), tmp_path / "plots"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png")
    with untouched(folder):
        refused(run(["data", "inspect", str(source), "--model", str(tiny_model_dir), "--plot", str(folder)],
                    home=home), "is a folder")


def test_inspect_plot_onto_a_file_needs_overwrite(home, tmp_path, tiny_model_dir):
    source, plot = chat_file(tmp_path / "in.jsonl"), tmp_path / "p.png"
    plot.write_bytes(b"mine")
    with untouched(plot):
        refused(run(["data", "inspect", str(source), "--model", str(tiny_model_dir), "--plot", str(plot)],
                    home=home), "--overwrite")


@pytest.mark.parametrize(("flags", "expected"), [(["--sample", "-1"], "--sample"), (["--max-len", "0"], "--max-len")])
def test_inspect_out_of_range_flags(home, tmp_path, tiny_model_dir, flags, expected):
    source = chat_file(tmp_path / "in.jsonl")
    usage_error(run(["data", "inspect", str(source), "--model", str(tiny_model_dir), *flags], home=home), expected)


def test_inspect_a_sample_outside_the_dataset(home, tmp_path, tiny_model_dir):
    source = chat_file(tmp_path / "in.jsonl")
    refused(run(["data", "inspect", str(source), "--model", str(tiny_model_dir), "--sample", "99"], home=home),
            "outside the dataset")


# --- training -----------------------------------------------------------------------------------


def test_sft_recipe_missing(home, tmp_path):
    refused(run(["train", "sft", str(tmp_path / "nope.yaml")], home=home), "recipe not found")


@pytest.mark.parametrize(("content", "expected"), [
    (b"model: [unclosed", "is not valid YAML"),
    (b"- a list\n- not a mapping\n", "must be a YAML mapping"),
    (b"run:\n  out_dir: caf\xe9\n", "is not valid UTF-8"),
    (b"optimizer:\n  lr: .nan\n", "optimizer.lr: Input should be a finite number"),
    (b"optimizer:\n  lr: -1\n", "optimizer.lr: Input should be greater than 0"),
    (b"method:\n  dropout: 1.5\n", "method.dropout"),
    (b"model:\n  precision: fp8\n", "model.precision"),
    (b"tokens: 5\n", "tokens"),
])
def test_bad_recipes(home, tmp_path, content, expected):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    refused(run(["train", "sft", str(path)], home=home), expected)


@pytest.mark.parametrize(("flags", "expected"), [
    (["--lr", "-1"], "optimizer.lr: Input should be greater than 0"),
    (["--seed", "18446744073709551616"], "run.seed: Input should be less than or equal to 4294967295"),
    (["--batch-size", "0"], "run.batch_size"),
    (["--steps", "0"], "run.steps"),
    (["--stepz", "3"], "unknown recipe key 'stepz'"),
    (["--r", "zero"], "method.r"),
    (["--beta", "0"], "objective.beta"),
    (["lonely"], "unexpected argument 'lonely'"),
])
def test_bad_recipe_overrides(home, tmp_path, flags, expected):
    path = recipe(tmp_path / "r.yaml", chat_file(tmp_path / "c.jsonl"), tmp_path / "run")
    refused(run(["train", "sft", str(path), *flags], home=home), expected)


@pytest.mark.parametrize(("train", "expected"), [
    ("/nonexistent/chat.jsonl", "dataset not found"),
    ("", "names no training data"),
    ("lmstack:nope", "no shipped dataset 'lmstack:nope'"),
])
def test_training_data_is_checked_before_the_model_loads(home, tmp_path, train, expected):
    path = recipe(tmp_path / "r.yaml", train or "''", tmp_path / "run")
    path.write_text(path.read_text().replace("model:\n", "model:\n  ref: /nonexistent/model\n"))
    refused(run(["train", "sft", str(path)], home=home), expected)


def test_training_data_that_is_a_folder(home, tmp_path):
    path = recipe(tmp_path / "r.yaml", tmp_path, tmp_path / "run")
    refused(run(["train", "sft", str(path)], home=home), "is a folder; the dataset must be a file")


def test_run_folder_that_is_a_file(home, tmp_path, tiny_model_dir):
    blocker = tmp_path / "run"
    blocker.write_text("x")
    path = recipe(tmp_path / "r.yaml", chat_file(tmp_path / "c.jsonl"), blocker)
    with untouched(blocker):
        refused(run(["train", "sft", str(path), "--ref", str(tiny_model_dir)], home=home), "is a file")


def test_a_non_empty_run_folder_needs_overwrite_or_resume(home, tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    path = recipe(tmp_path / "r.yaml", chat_file(tmp_path / "c.jsonl"), out)
    with untouched(out):
        refused(run(["train", "sft", str(path), "--ref", str(tiny_model_dir)], home=home), "--overwrite")


def test_resume_without_a_checkpoint(home, tmp_path, tiny_model_dir):
    path = recipe(tmp_path / "r.yaml", chat_file(tmp_path / "c.jsonl"), tmp_path / "run")
    refused(run(["train", "sft", str(path), "--ref", str(tiny_model_dir), "--resume"], home=home),
            "no checkpoint to resume from")


@pytest.fixture
def checkpointed_run(home, tmp_path, tiny_model_dir) -> tuple[Path, Path]:
    """A finished two-step run with a checkpoint: (recipe, run folder)."""
    out = tmp_path / "run"
    path = recipe(tmp_path / "r.yaml", chat_file(tmp_path / "c.jsonl"), out)
    result = run(["train", "sft", str(path), "--ref", str(tiny_model_dir), "--checkpoint-every", "1"], home=home)
    assert result.returncode == 0, result.stderr
    return path, out


def test_resume_with_changed_settings_is_refused_and_names_them(home, checkpointed_run, tiny_model_dir):
    path, out = checkpointed_run
    with untouched(out):
        message = refused(run(["train", "sft", str(path), "--ref", str(tiny_model_dir), "--checkpoint-every", "1",
                               "--resume", "--lr", "0.1", "--r", "4"], home=home), "differ from the checkpoint")
    assert "optimizer.lr: 0.0002 -> 0.1" in message and "method.r: 16 -> 4" in message


def test_resume_from_a_truncated_checkpoint(home, checkpointed_run, tiny_model_dir):
    path, out = checkpointed_run
    state = out / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[:500])
    refused(run(["train", "sft", str(path), "--ref", str(tiny_model_dir), "--checkpoint-every", "1", "--resume"],
                home=home), "is damaged")


def test_dpo_refuses_an_sft_recipe_and_sft_a_dpo_one(home, tmp_path):
    path = recipe(tmp_path / "r.yaml", chat_file(tmp_path / "c.jsonl"), tmp_path / "run")
    refused(run(["train", "dpo", str(path)], home=home), "--loss sigmoid|ipo|cdpo|kto|orpo")
    refused(run(["train", "sft", str(path), "--loss", "kto"], home=home), "lmstack train dpo")


@pytest.mark.parametrize(("flags", "expected"), [
    (["--scorer", "nope:x"], "unknown scorer 'nope:x'"),
    (["--scorer", "regex:(unclosed"], "invalid scorer regex"),
    (["--scorer", "python:no_such_module:f"], "cannot import scorer"),
    (["--scorer", "regex:a", "-n", "1"], "num_samples must be at least 2"),
    (["--scorer", "regex:a", "--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
])
def test_bad_rejection_sampling_settings(home, tmp_path, tiny_model_dir, flags, expected):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    refused(run(["train", "reject", str(tiny_model_dir), str(prompts), str(tmp_path / "o.jsonl"), *flags],
                home=home), expected)


def test_rejection_sampling_keeps_an_existing_output(home, tmp_path, tiny_model_dir):
    prompts, out = tmp_path / "p.jsonl", tmp_path / "o.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    out.write_text("mine\n")
    with untouched(out):
        refused(run(["train", "reject", str(tiny_model_dir), str(prompts), str(out), "--scorer", "regex:a"],
                    home=home), "--overwrite")


def test_merge_adapter_with_a_folder_that_is_not_an_adapter(home, tmp_path, tiny_model_dir):
    refused(run(["train", "merge-adapter", str(tiny_model_dir), str(tmp_path), str(tmp_path / "o")], home=home),
            "is not an adapter directory")


# --- evaluation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.txt", None, "text to score not found"),
    ("empty.txt", b"", "is empty"),
    ("binary.txt", BINARY, "looks binary"),
    ("latin1.txt", b"caf\xe9 au lait", "is not valid UTF-8"),
])
def test_perplexity_text_is_checked_before_the_model_loads(home, tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    refused(run(["eval", "perplexity", "/nonexistent/model", str(path)], home=home), expected)


def test_perplexity_of_a_folder(home, tmp_path):
    refused(run(["eval", "perplexity", "/nonexistent/model", str(tmp_path)], home=home), "is a folder")


def test_perplexity_of_a_one_token_text(home, tmp_path, tiny_model_dir):
    text = tmp_path / "one.txt"
    text.write_text("a")
    refused(run(["eval", "perplexity", str(tiny_model_dir), str(text)], home=home), "at least 2 tokens")


@pytest.mark.parametrize(("flags", "expected"), [(["--window", "1"], "--window"), (["--stride", "0"], "--stride")])
def test_perplexity_window_flags(home, tmp_path, flags, expected):
    text = tmp_path / "t.txt"
    text.write_text("abcd abcd")
    usage_error(run(["eval", "perplexity", "/nonexistent/model", str(text), *flags], home=home), expected)


@pytest.mark.parametrize(("content", "expected"), [
    (b'{"messages": [{"role": "user", "content": "hi"}]}\n', "needs a 'messages' list and an 'expected' string"),
    (b"\n\n", "no questions to ask"),
])
def test_answers_with_a_wrong_dataset(home, tmp_path, content, expected):
    path = tmp_path / "q.jsonl"
    path.write_bytes(content)
    refused(run(["eval", "answers", "/nonexistent/model", str(path)], home=home), expected)


# --- registry, pull, models and the home ---------------------------------------------------------


def test_registry_show_of_an_unknown_id(home):
    refused(run(["registry", "show", "m-00000000"], home=home), "no artifact 'm-00000000'")


def test_registry_list_of_an_unknown_kind(home):
    refused(run(["registry", "list", "--kind", "weights"], home=home), "unknown artifact kind 'weights'")


@pytest.mark.parametrize("command", [["registry", "list"], ["models"]])
def test_a_damaged_registry(home, command):
    (home / "registry.db").write_bytes(b"this is not a database" * 100)
    with untouched(home / "registry.db"):
        refused(run(command, home=home), "registry")


def test_pull_of_a_name_not_in_the_catalog(home):
    refused(run(["pull", "smollm3"], home=home), "smollm3")


def test_a_home_that_is_a_file(tmp_path):
    blocker = tmp_path / "home-file"
    blocker.write_text("x")
    refused(run(["registry", "list"], home=blocker), "writable folder")


def test_an_override_that_is_not_yaml(home, tmp_path):
    path = recipe(tmp_path / "r.yaml", chat_file(tmp_path / "c.jsonl"), tmp_path / "run")
    refused(run(["train", "sft", str(path), "--lr", "[unclosed"], home=home), "optimizer.lr")
