"""Property-based fuzzing of every reader of user files: any input either loads or fails with
LmstackError (a clear message), never another exception.

Inputs start from valid files (a tiny GGUF, a safetensors file, a config.json, datasets) and are
damaged the ways files get damaged: truncated, bytes flipped or overwritten, random bytes, and
well-formed JSON of the wrong shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmstack.errors import LmstackError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def damaged(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` truncated, with bytes overwritten, or replaced by random bytes."""
    size = len(data)
    truncated = st.integers(0, size - 1).map(lambda n: data[:n])
    overwritten = st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda edits: _overwrite(data, edits))
    return truncated | overwritten | st.binary(max_size=256)


def _overwrite(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for at, value in edits:
        buffer[at] = value
    return bytes(buffer)


def loads_or_refuses(read, *args) -> None:
    try:
        read(*args)
    except LmstackError as error:
        assert str(error).strip() and "\n" not in str(error).strip()


# --- GGUF --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(tiny_gguf) -> bytes:
    return tiny_gguf.read_bytes()


def read_whole_gguf(path: Path) -> None:
    """Everything lmstack does with a GGUF: header, config, weights, tokenizer."""
    from lmstack.formats.gguf_file import read_gguf
    from lmstack.model import gguf_io
    from lmstack.model.weights import build_model
    from lmstack.tokenizer import Tokenizer

    gguf = read_gguf(path)
    config = gguf_io.config_from_gguf(gguf)
    build_model(config, gguf_io.state_dict_from_gguf(gguf, config))
    Tokenizer.from_gguf(gguf)


def test_the_valid_tiny_gguf_loads(gguf_bytes, tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes)
    read_whole_gguf(path)


@SETTINGS
@given(data=st.data())
def test_a_damaged_gguf_loads_or_is_refused(gguf_bytes, tmp_path, data):
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(data.draw(damaged(gguf_bytes)))
    loads_or_refuses(read_whole_gguf, path)


# --- safetensors and config.json ---------------------------------------------------------------


HF_CONFIG = {"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.fixture(scope="module")
def safetensors_bytes(tmp_path_factory) -> bytes:
    from safetensors.torch import save_file

    from lmstack.model.config import ModelConfig
    from lmstack.model.transformer import Transformer

    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    state = Transformer(ModelConfig.from_hf(HF_CONFIG)).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path.read_bytes()


def read_hf_directory(directory: Path) -> None:
    from lmstack.model import hf_io
    from lmstack.model.weights import build_model

    build_model(hf_io.read_config(directory), hf_io.read_state_dict(directory))


@SETTINGS
@given(data=st.data())
def test_damaged_safetensors_load_or_are_refused(safetensors_bytes, tmp_path, data):
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIG))
    (tmp_path / "model.safetensors").write_bytes(data.draw(damaged(safetensors_bytes)))
    loads_or_refuses(read_hf_directory, tmp_path)


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(sorted(HF_CONFIG) + ["head_dim", "tie_word_embeddings",
                                                                      "rope_scaling", "layer_types"]), JSON,
                               max_size=3))
def test_config_json_with_wrong_values_loads_or_is_refused(safetensors_bytes, tmp_path, changes):
    (tmp_path / "config.json").write_text(json.dumps({**HF_CONFIG, **changes}, allow_nan=True))
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes)
    loads_or_refuses(read_hf_directory, tmp_path)


@SETTINGS
@given(content=st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()))
def test_a_config_json_that_is_not_a_config_is_refused(tmp_path, content):
    from lmstack.model import hf_io

    (tmp_path / "config.json").write_bytes(content)
    loads_or_refuses(hf_io.read_config, tmp_path)


# --- datasets ----------------------------------------------------------------------------------


VALID = {
    ".jsonl": b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n',
    ".json": b'[{"prompt": "p", "chosen": "c", "rejected": "r"}]',
    ".csv": b"instruction,output\nsay hi,hi\n",
}


@SETTINGS
@given(data=st.data(), suffix=st.sampled_from(sorted(VALID)))
def test_a_damaged_dataset_loads_or_is_refused(tmp_path, data, suffix):
    from lmstack.data import load_dataset

    path = tmp_path / f"data{suffix}"
    path.write_bytes(data.draw(damaged(VALID[suffix])))
    loads_or_refuses(load_dataset, path)


@SETTINGS
@given(records=st.lists(JSON, min_size=1, max_size=3))
def test_records_of_any_shape_load_or_are_refused(tmp_path, records):
    from lmstack.data import load_dataset

    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loads_or_refuses(load_dataset, path)


@SETTINGS
@given(data=st.data())
def test_a_damaged_parquet_dataset_loads_or_is_refused(tmp_path, data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmstack.data import load_dataset

    valid = tmp_path / "valid.parquet"
    pq.write_table(pa.table({"text": ["one", "two"]}), valid)
    path = tmp_path / "data.parquet"
    path.write_bytes(data.draw(damaged(valid.read_bytes())))
    loads_or_refuses(load_dataset, path)
