"""Hugging Face model directories: `config.json` + safetensors (single or sharded) + tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmstack.errors import LmstackError
from lmstack.home import atomic_path
from lmstack.inputs import read_json_object
from lmstack.model.config import ModelConfig

SHARD_INDEX = "model.safetensors.index.json"


def read_config(directory: Path) -> ModelConfig:
    path = directory / "config.json"
    if not path.is_file():
        raise LmstackError(f"{directory} has no config.json; is it a Hugging Face model directory?")
    hf = read_json_object(path)
    try:
        return ModelConfig.from_hf(hf)
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # a value of the wrong type or shape
        raise LmstackError(f"{path} is not a valid model config ({type(error).__name__}: {error}); fix it") from None


def read_quantization(directory: Path) -> dict[str, Any] | None:
    """config.json's `quantization` section (see `lmstack/model/quantized.py`), or None."""
    section = json.loads((directory / "config.json").read_text()).get("quantization")
    if section is not None and not isinstance(section, dict):
        raise LmstackError(f"{directory / 'config.json'}: 'quantization' must be an object; re-save the model")
    return section


def read_generation_config(directory: Path) -> dict[str, Any]:
    path = directory / "generation_config.json"
    return read_json_object(path) if path.is_file() else {}


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of the directory, memory-mapped from safetensors where possible."""
    from safetensors.torch import load_file

    index = directory / SHARD_INDEX
    if index.is_file():
        files = _shard_files(index)
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise LmstackError(f"{directory} has no model.safetensors or {SHARD_INDEX}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            state.update(load_file(directory / name))
        except Exception as error:  # noqa: BLE001 - safetensors raises several types for a damaged file
            reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
            raise LmstackError(f"{directory / name} is missing or corrupt ({reason}); re-export or copy it again") \
                from None
    return _split_fused_experts(state)


def _split_fused_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mixtral as transformers 5 saves it (and mergekit-moe writes it), in the per-expert layout.

    The fused layout holds a layer's experts in `mlp.experts.gate_up_proj` [experts, 2 x
    intermediate, hidden] (gate rows first), `mlp.experts.down_proj` [experts, hidden,
    intermediate] and the router in `mlp.gate.weight`; lmstack (and every transformers version)
    reads `block_sparse_moe.gate` and `block_sparse_moe.experts.N.w1/w3/w2`. Anything incomplete is
    left as it is, for the weight check to name.
    """
    for fused in [name for name in state if name.endswith(".mlp.experts.gate_up_proj")]:
        prefix = fused.removesuffix(".mlp.experts.gate_up_proj")
        names = (fused, f"{prefix}.mlp.experts.down_proj", f"{prefix}.mlp.gate.weight")
        if not all(name in state for name in names) or state[fused].dim() != 3 or state[fused].shape[1] % 2:
            continue
        gate_up, down, router = (state.pop(name) for name in names)
        gate, up = gate_up.chunk(2, dim=1)
        state[f"{prefix}.block_sparse_moe.gate.weight"] = router
        for expert in range(gate_up.shape[0]):
            for short, tensor in (("w1", gate), ("w3", up), ("w2", down)):
                state[f"{prefix}.block_sparse_moe.experts.{expert}.{short}.weight"] = tensor[expert]
    return state


def _shard_files(index: Path) -> list[str]:
    """The safetensors files a sharded checkpoint's index names."""
    weight_map = read_json_object(index).get("weight_map")
    try:
        files = sorted({str(name) for name in weight_map.values()})
    except AttributeError as error:
        raise LmstackError(f"{index} is not a valid shard index ({type(error).__name__}); re-export the model") \
            from None
    if any("/" in name or name.startswith(".") for name in files):
        raise LmstackError(f"{index} names files outside the model folder; re-export the model")
    return files


def write_model_dir(
    directory: str | Path,
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    tokenizer,
    generation_config: dict[str, Any],
    dtype: torch.dtype = torch.float32,
    extra_files: dict[str, str] | None = None,
    quantization: dict[str, Any] | None = None,
) -> Path:
    """Write a complete HF directory atomically: it appears whole or not at all.

    Floating-point tensors are stored in `dtype`; a quantized model's integer tensors, and the
    tensors of the layers its `quantization` section lists, keep their own dtypes.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    quantized = tuple(f"{name}." for name in (quantization or {}).get("layers", {}))
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() and not k.startswith(quantized) else None)
               .contiguous() for k, v in state_dict.items()}
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # shared with the embeddings; safetensors stores it once
    hf_config = config.to_hf() | {"torch_dtype": str(dtype).removeprefix("torch.")}
    if quantization:
        hf_config["quantization"] = quantization
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
        tokenizer.save(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return directory
