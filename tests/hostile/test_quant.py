"""Hostile input to `lmstack quant ...`: bad models, settings, texts, outputs and damaged quantized
models are refused with one line, before work starts where possible, leaving the user's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from harness import refused, run, untouched, usage_error

from tests.quant.quant_tiny_models import word_text, write_tiny_dir


@pytest.fixture
def tiny(tmp_path, tiny_config) -> Path:
    return write_tiny_dir(tmp_path / "tiny", tiny_config)


@pytest.fixture
def texts(tmp_path) -> dict[str, Path]:
    files = {"good": tmp_path / "calib.txt", "binary": tmp_path / "binary.txt", "empty": tmp_path / "empty.txt",
             "latin1": tmp_path / "latin1.txt", "short": tmp_path / "short.txt"}
    files["good"].write_text(word_text(128, 400, 1))
    files["binary"].write_bytes(b"\x00\x01\x02 weights \x00" * 50)
    files["empty"].write_bytes(b"")
    files["latin1"].write_bytes("caf\xe9 au lait ".encode("latin-1") * 20)
    files["short"].write_text("w1 w2 w3")
    return files


def test_unknown_model(home, tmp_path):
    refused(run(["quant", "int8", "no-such-model", str(tmp_path / "out")], home=home), "not a model lmstack knows")


@pytest.mark.parametrize("args,expected", [
    (["int4", "--group-size", "4"], "--group-size"),
    (["gptq", "--damp", "2"], "--damp"),
    (["smoothquant", "--alpha", "-0.1"], "--alpha"),
    (["gptq", "--samples", "0"], "--samples"),
    (["llm-int8", "--threshold", "0"], "--threshold"),
])
def test_out_of_range_numbers_are_usage_errors(home, tiny, tmp_path, args, expected):
    usage_error(run(["quant", args[0], str(tiny), str(tmp_path / "out"), *args[1:]], home=home), expected)


@pytest.mark.parametrize("args,expected", [
    (["gptq", "--bits", "5"], "bits"),
    (["int8", "--granularity", "diagonal"], "granularity"),
    (["int4", "--head", "int2"], "head"),
    (["int8", "--scheme", "log"], "scheme"),
    (["int4", "--group-size", "12"], "group_size"),
])
def test_invalid_settings_are_refused_before_loading(home, tiny, tmp_path, args, expected):
    refused(run(["quant", args[0], str(tiny), str(tmp_path / "out"), *args[1:]], home=home),
            "invalid quantization setting", expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("which,expected", [
    ("missing", "not found"), ("binary", "looks binary"), ("empty", "is empty"), ("latin1", "not valid UTF-8"),
    ("short", "at least 64"),
])
def test_bad_calibration_text(home, tiny, tmp_path, texts, which, expected):
    calib = texts.get(which, tmp_path / "missing.txt")
    with untouched(calib):
        refused(run(["quant", "gptq", str(tiny), str(tmp_path / "out"), "--calib", str(calib)], home=home), expected)
    assert not (tmp_path / "out").exists()


def test_bad_evaluation_text(home, tiny, tmp_path, texts):
    refused(run(["quant", "int8", str(tiny), str(tmp_path / "out"), "--eval", str(texts["latin1"])], home=home),
            "not valid UTF-8", "offset")


def test_non_empty_output_is_kept(home, tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with untouched(out):
        refused(run(["quant", "int8", str(tiny), str(out), "--no-eval"], home=home), "not empty", "--overwrite")


def test_output_that_is_a_file(home, tiny, tmp_path):
    out = tmp_path / "model.bin"
    out.write_text("mine")
    with untouched(out):
        refused(run(["quant", "int4", str(tiny), str(out)], home=home), "is a file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_folder(home, tiny, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(run(["quant", "int8", str(tiny), str(locked / "out")], home=home), "not writable")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("args,expected", [
    (["-t", "q9_9"], "unknown GGUF type 'q9_9'"),
    (["-t", "q4_0", "--method", "magic"], "unknown GGUF export method"),
])
def test_gguf_export_refuses_unknown_types_and_methods(home, tiny, tmp_path, args, expected):
    refused(run(["quant", "gguf", str(tiny), str(tmp_path / "out"), *args], home=home), expected)


def test_gguf_export_needs_a_type(home, tiny, tmp_path):
    usage_error(run(["quant", "gguf", str(tiny), str(tmp_path / "out")], home=home), "--type")


def test_compare_with_a_missing_model(home, tiny, tmp_path):
    refused(run(["quant", "compare", str(tiny), str(tmp_path / "nowhere")], home=home), "nowhere")


@pytest.fixture
def quantized(home, tiny, tmp_path) -> Path:
    out = tmp_path / "q"
    result = run(["quant", "int8", str(tiny), str(out), "--no-eval"], home=home)
    assert result.returncode == 0, result.stderr.decode()
    return out


def test_damaged_quantization_section(home, quantized):
    config = json.loads((quantized / "config.json").read_text())
    config["quantization"]["layers"]["lm_head"]["kind"] = "int3"
    (quantized / "config.json").write_text(json.dumps(config))
    refused(run(["generate", str(quantized), "w1 w2", "--raw", "-n", "2"], home=home), "unknown kind 'int3'")


def test_quantized_model_with_a_missing_tensor(home, quantized):
    from safetensors.torch import load_file, save_file

    tensors = load_file(quantized / "model.safetensors")
    del tensors["model.layers.0.mlp.up_proj.scales"]
    save_file(tensors, quantized / "model.safetensors")
    refused(run(["generate", str(quantized), "w1 w2", "--raw", "-n", "2"], home=home),
            "model.layers.0.mlp.up_proj.scales")


def test_truncated_quantized_weights(home, quantized):
    weights = quantized / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused(run(["generate", str(quantized), "w1 w2", "--raw", "-n", "2"], home=home), "corrupt")
