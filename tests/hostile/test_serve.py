"""Hostile input for `lmstack serve`: every bad flag, adapter or address is a one-line refusal made
before the server starts (most before the model loads). What a bad HTTP request gets is tested in
tests/serve/ (a 4xx with an OpenAI error body, and the server keeps serving)."""

from __future__ import annotations

import json
import socket

import pytest
from harness import refused, run, untouched, usage_error


def serve(*args, home):
    return run(["serve", *map(str, args)], home=home)


@pytest.fixture
def adapter_dir(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    return folder


def test_missing_model(home, tmp_path):
    refused(serve(tmp_path / "nope.gguf", home=home), "nope.gguf")


def test_empty_model_file(home, tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with untouched(empty):
        refused(serve(empty, home=home), "empty.gguf")


@pytest.mark.parametrize("spec", ["pirate", "=some/path", "pirate="])
def test_adapter_spec_without_name_or_path(home, spec, tiny_gguf):
    refused(serve(tiny_gguf, "--adapter", spec, home=home), "NAME=PATH")


def test_adapter_name_with_spaces(home, tiny_gguf, adapter_dir):
    refused(serve(tiny_gguf, "--adapter", f"my pirate={adapter_dir}", home=home), "adapter name")


def test_adapter_folder_missing(home, tiny_gguf, tmp_path):
    refused(serve(tiny_gguf, "--adapter", f"p={tmp_path / 'nope'}", home=home), "not found")


def test_adapter_is_a_file(home, tiny_gguf, tmp_path):
    file = tmp_path / "adapter.safetensors"
    file.write_bytes(b"x")
    refused(serve(tiny_gguf, "--adapter", f"p={file}", home=home), "adapter.safetensors")


def test_adapter_folder_without_config(home, tiny_gguf, tmp_path):
    (tmp_path / "plain").mkdir()
    refused(serve(tiny_gguf, "--adapter", f"p={tmp_path / 'plain'}", home=home), "adapter_config.json")


def test_adapter_name_given_twice(home, tiny_gguf, adapter_dir):
    refused(serve(tiny_gguf, "--adapter", f"p={adapter_dir}", "--adapter", f"p={adapter_dir}", home=home), "twice")


def test_damaged_adapter_weights(home, tiny_gguf, adapter_dir):
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with untouched(adapter_dir):
        refused(serve(tiny_gguf, "--adapter", f"p={adapter_dir}", "--port", _free_port(), home=home),
                "safetensors")


def test_adapter_for_another_model(home, tiny_gguf, adapter_dir):
    import torch
    from safetensors.torch import save_file

    save_file({"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": torch.zeros(2, 8),
               "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight": torch.zeros(8, 2)},
              str(adapter_dir / "adapter_model.safetensors"))
    refused(serve(tiny_gguf, "--adapter", f"p={adapter_dir}", "--port", _free_port(), home=home), "layers.7")


def test_dora_adapter_is_refused(home, tiny_gguf, adapter_dir):
    (adapter_dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                                 "use_dora": True}))
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"")
    refused(serve(tiny_gguf, "--adapter", f"p={adapter_dir}", "--port", _free_port(), home=home), "DoRA")


@pytest.mark.parametrize(("flag", "value"), [
    ("--port", "0"), ("--port", "70000"), ("--max-sequences", "0"), ("--queue-timeout", "0"),
    ("--max-body-mb", "-1"), ("--kv-cache-mb", "0"), ("--max-context", "1"), ("--max-waiting", "-3"),
    ("--queue-timeout", "nan"),
])
def test_out_of_range_flags(home, tiny_gguf, flag, value):
    usage_error(serve(tiny_gguf, flag, value, home=home), flag)


def test_port_in_use(home, tiny_gguf):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refused(serve(tiny_gguf, "--port", taken.getsockname()[1], home=home), "cannot listen")


def test_host_that_is_not_this_machine(home, tiny_gguf):
    refused(serve(tiny_gguf, "--host", "203.0.113.7", "--port", _free_port(), home=home), "cannot listen")


def test_unknown_template(home, tiny_gguf):
    refused(serve(tiny_gguf, "--template", "nonesuch", "--port", _free_port(), home=home), "nonesuch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
