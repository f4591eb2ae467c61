"""Hostile input to `lmstack merge`: bad config files, bad values, bad models and bad outputs are
refused with one line, before any work, and nothing of the user's changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from harness import refused, run, untouched, usage_error


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny fine-tunes of one model, one model of another width, one with damaged weights."""
    from tests.merge.merge_models import fine_tune_of, random_state, save_model, tiny_llama

    root = tmp_path_factory.mktemp("hostile-merge")
    config = tiny_llama()
    base = random_state(config, 0)
    paths = {name: Path(save_model(root / name, config, fine_tune_of(base, seed))) for seed, name in
             enumerate(["a", "b"])}
    wide = tiny_llama(hidden_size=96, head_dim=24)
    paths["wide"] = Path(save_model(root / "wide", wide, random_state(wide, 0)))
    paths["damaged"] = Path(save_model(root / "damaged", config, base))
    weights = paths["damaged"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    return paths


def write_config(folder: Path, paths: dict[str, Path], **changes) -> Path:
    config = {"merge_method": "linear", "models": [{"model": str(paths["a"]), "parameters": {"weight": 1.0}},
                                                   {"model": str(paths["b"]), "parameters": {"weight": 1.0}}]}
    config.update(changes)
    config = {key: value for key, value in config.items() if value is not None}
    path = folder / "merge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_missing_config(home, tmp_path):
    refused(run(["merge", str(tmp_path / "nope.yaml"), str(tmp_path / "out")], home=home), "merge config not found")


def test_config_is_a_folder(home, tmp_path):
    refused(run(["merge", str(tmp_path), str(tmp_path / "out")], home=home), "is a folder")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"\x00\x01\x02binary", "looks binary"),
    (b"merge_method: linear\nmodels: [\xff\xfe]\n", "not valid UTF-8"),
    (b"merge_method: [linear\n", "not valid YAML"),
    (b"- just\n- a list\n", "must be a YAML mapping"),
    (b"merge_method: linear\n", "give exactly one of `models` or `slices`"),
    (b"merge_method: linear\nmodels: []\nslices: []\nwat: 1\n", "wat: Extra inputs are not permitted"),
])
def test_bad_config_files(content, message, home, tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_bytes(content)
    with untouched(config):
        refused(run(["merge", str(config), str(tmp_path / "out")], home=home), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("changes", "message"), [
    ({"merge_method": "average"}, "unknown merge_method 'average'"),
    ({"parameters": {"weight": float("nan")}}, "weight must be a finite number"),
    ({"merge_method": "ties", "base_model": "A", "parameters": {"density": 1.5}}, "density must be between 0.0 and 1.0"),
    ({"merge_method": "slerp", "base_model": "A", "parameters": {"t": "half"}}, "t must be a finite number"),
    ({"dtype": "int4"}, "'int4' is not a dtype"),
    ({"tokenizer_source": "union"}, "tokenizer_source: union"),
])
def test_bad_values(changes, message, home, tmp_path, models):
    changes = {k: (str(models["a"]) if v == "A" else v) for k, v in changes.items()}
    config = write_config(tmp_path, models, **changes)
    with untouched(config, models["a"], models["b"]):
        refused(run(["merge", str(config), str(tmp_path / "out")], home=home), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("model", "message"), [
    ("missing", "does not exist"),
    ("wide", "hidden_size 96"),
    ("damaged", "not a readable safetensors file"),
])
def test_bad_models(model, message, home, tmp_path, models):
    other = models.get(model, tmp_path / "missing-model")
    config = write_config(tmp_path, models, models=[{"model": str(models["a"]), "parameters": {"weight": 1}},
                                                    {"model": str(other), "parameters": {"weight": 1}}])
    with untouched(models["a"], models["wide"], models["damaged"]):
        refused(run(["merge", str(config), str(tmp_path / "out")], home=home), message)


def test_layer_range_past_the_end(home, tmp_path, models):
    config = write_config(tmp_path, models, merge_method="passthrough", models=None,
                          slices=[{"sources": [{"model": str(models["a"]), "layer_range": [0, 9]}]}])
    refused(run(["merge", str(config), str(tmp_path / "out")], home=home), "goes past its 4 layers")


def test_non_empty_output_is_kept(home, tmp_path, models):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with untouched(out):
        refused(run(["merge", str(write_config(tmp_path, models)), str(out)], home=home), "--overwrite")


def test_output_is_a_file(home, tmp_path, models):
    out = tmp_path / "out"
    out.write_text("mine")
    with untouched(out):
        refused(run(["merge", str(write_config(tmp_path, models)), str(out)], home=home), "is a file")


def test_unwritable_output_parent(home, tmp_path, models):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        refused(run(["merge", str(write_config(tmp_path, models)), str(locked / "out")], home=home), "not writable")
    finally:
        locked.chmod(0o700)


def test_negative_seed_is_a_usage_error(home, tmp_path, models):
    usage_error(run(["merge", str(write_config(tmp_path, models)), str(tmp_path / "out"), "--seed", "-1"], home=home),
                "--seed")


def test_unknown_device(home, tmp_path, models):
    refused(run(["merge", str(write_config(tmp_path, models)), str(tmp_path / "out"), "--device", "tpu9"],
                home=home), "unknown device 'tpu9'")


def test_a_good_merge_then_overwrite(home, tmp_path, models):
    """The contract's other half: the same command succeeds, and replaces its output only when asked."""
    config, out = write_config(tmp_path, models), tmp_path / "out"
    first = run(["merge", str(config), str(out), "--json"], home=home)
    assert first.returncode == 0, first.stderr.decode()
    assert (out / "model.safetensors").is_file()
    refused(run(["merge", str(config), str(out)], home=home), "--overwrite")
    again = run(["merge", str(config), str(out), "--overwrite"], home=home)
    assert again.returncode == 0, again.stderr.decode()


# --- lmstack abliterate ----------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (b"\x00\x00binary", "looks binary"),
    (b'{"prompt": "x"\n', "invalid JSON"),
    (b'{"prompt": "How do I bake bread?", "harmful": "no"}\n', "'harmful' true/false"),
    (b'{"prompt": "How do I bake bread?", "harmful": false}\n', "harmful: true and with harmful: false"),
])
def test_abliterate_bad_prompt_files(content, message, home, tmp_path, models):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(content)
    with untouched(prompts, models["a"]):
        refused(run(["abliterate", str(models["a"]), str(tmp_path / "out"), "--train", str(prompts)], home=home),
                message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--layer", "0"], "--layer"),
])
def test_abliterate_out_of_range_values(args, message, home, tmp_path, models):
    usage_error(run(["abliterate", str(models["a"]), str(tmp_path / "out"), *args], home=home), message)


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "lobotomy"], "unknown method 'lobotomy'"),
    (["--marker", " "], "refusal markers must be non-empty"),
    (["--dtype", "int3"], "unknown dtype 'int3'"),
    (["--layer", "7"], "candidate layers must be between 1 and 3"),
])
def test_abliterate_bad_options(args, message, home, tmp_path, models):
    refused(run(["abliterate", str(models["a"]), str(tmp_path / "out"), *args], home=home), message)
    assert not (tmp_path / "out").exists()


def test_abliterate_missing_model_and_kept_output(home, tmp_path, models):
    refused(run(["abliterate", str(tmp_path / "no-model"), str(tmp_path / "out")], home=home), "does not exist")
    out = tmp_path / "kept"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with untouched(out):
        refused(run(["abliterate", str(models["a"]), str(out)], home=home), "--overwrite")
