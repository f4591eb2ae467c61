"""`resolve`: catalog names, GGUF files, HF folders and registry ids, and how each goes wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_fakes import write_tiny_gguf

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.hub import Resolved, resolve
from lmstack.formats.gguf_file import read_gguf


def _hf_folder(folder: Path, weights: str = "model.safetensors") -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / weights).write_bytes(b"")
    return folder


def test_catalog_name_pulls_on_first_use(tiny_model, lmstack_home, capsys):
    first = resolve(tiny_model.name)

    assert first.kind == "gguf" and first.name == tiny_model.name
    assert first.path == lmstack_home / "models" / tiny_model.name / tiny_model.filename
    assert first.registry_id == registry.find_by_path(first.path).id
    assert "not pulled yet" in capsys.readouterr().err
    assert resolve(tiny_model.name) == first
    assert "not pulled yet" not in capsys.readouterr().err


def test_gguf_path(tmp_path):
    path = write_tiny_gguf(tmp_path / "model.gguf")

    assert resolve(str(path)) == Resolved("gguf", path.resolve(), "model", None)


def test_gguf_checker_agrees_with_the_gguf_reader(tmp_path):
    """Our header walk must compute exactly the size the reference reader maps."""
    from gguf import GGUFReader

    path = write_tiny_gguf(tmp_path / "model.gguf")
    reader = GGUFReader(path)
    last = max(reader.tensors, key=lambda tensor: tensor.data_offset)
    assert last.data_offset + last.n_bytes == path.stat().st_size
    read_gguf(path)


def test_registered_path_gets_its_registry_name_and_id(tmp_path):
    path = write_tiny_gguf(tmp_path / "q8.gguf")
    artifact_id = registry.record("model", path, name="smollm2-q8", operation="quantize")

    assert resolve(path) == Resolved("gguf", path.resolve(), "smollm2-q8", artifact_id)
    assert resolve(artifact_id) == Resolved("gguf", path.resolve(), "smollm2-q8", artifact_id)


@pytest.mark.parametrize("weights", ["model.safetensors", "model.safetensors.index.json"])
def test_hf_folder(tmp_path, weights):
    folder = _hf_folder(tmp_path / "my-model", weights)

    assert resolve(folder) == Resolved("hf", folder.resolve(), "my-model", None)


def test_hf_folder_without_config(tmp_path):
    folder = _hf_folder(tmp_path / "my-model")
    (folder / "config.json").unlink()

    with pytest.raises(LmstackError, match="no config.json"):
        resolve(folder)


def test_hf_folder_without_safetensors(tmp_path):
    folder = _hf_folder(tmp_path / "my-model", "pytorch_model.bin")

    with pytest.raises(LmstackError, match="no model.safetensors"):
        resolve(folder)


def test_missing_file(tmp_path):
    with pytest.raises(LmstackError, match="does not exist"):
        resolve(tmp_path / "nowhere.gguf")


def test_not_a_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a model")

    with pytest.raises(LmstackError, match="not a GGUF file"):
        resolve(path)


@pytest.mark.parametrize("keep", [1, 0.5, 30])
def test_truncated_gguf(tmp_path, keep):
    """Cut in the tensor data (one byte short, halfway) and inside the header."""
    data = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = len(data) - 1 if keep == 1 else int(len(data) * keep) if keep < 1 else keep
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:cut])

    with pytest.raises(LmstackError, match="truncated"):
        resolve(path)


def test_unknown_registry_id():
    with pytest.raises(LmstackError, match="lmstack registry list"):
        resolve("m-0123abcd")


def test_registry_id_of_a_dataset_is_not_a_model(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    artifact_id = registry.record("dataset", data, name="train", operation="convert")

    with pytest.raises(LmstackError, match="is a dataset, not a model"):
        resolve(artifact_id)


def test_registry_id_whose_files_were_deleted(tmp_path):
    path = write_tiny_gguf(tmp_path / "gone.gguf")
    artifact_id = registry.record("model", path, name="gone", operation="export")
    path.unlink()

    with pytest.raises(LmstackError, match="no longer exists"):
        resolve(artifact_id)


def test_anything_else_lists_the_accepted_forms():
    with pytest.raises(LmstackError) as error:
        resolve("llama-70b")
    message = str(error.value)
    forms = ("catalog name", "smollm2-135m-instruct", ".gguf file", "Hugging Face", "registry id")
    assert all(form in message for form in forms)
    assert "Did you mean" not in message


def test_a_misspelt_catalog_name_gets_a_suggestion():
    with pytest.raises(LmstackError, match="Did you mean gemma-3-270m?"):
        resolve("gemma3-270m")
