"""Save and load LoRA adapters in the `peft` directory layout, so either library reads the other's.

A directory holds `adapter_config.json` (hyper-parameters, peft's field names) and
`adapter_model.safetensors` whose keys are `base_model.model.<module path>.lora_A.weight`,
`...lora_B.weight` and, for DoRA, `...lora_magnitude_vector`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lmstack.errors import LmstackError
from lmstack.home import atomic_path
from lmstack.peft.lora import LINEAR_TYPES, LoraConfig, LoraLinear, apply_lora, lora_layers

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
_TENSOR_SUFFIXES = ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector")


def _adapter_tensors(layer: LoraLinear) -> dict[str, torch.Tensor]:
    tensors = {"lora_A.weight": layer.lora_A.weight, "lora_B.weight": layer.lora_B.weight}
    if layer.use_dora:
        tensors["lora_magnitude_vector"] = layer.lora_magnitude_vector
    return tensors


def _peft_config(config: LoraConfig, module_paths: list[str], base_model: str) -> dict:
    # Full module paths as target_modules, as peft itself writes for "all-linear".
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": module_paths,
        "use_rslora": config.use_rslora,
        "use_dora": config.use_dora,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "lora_bias": False,
        "revision": None,
    }


def save_adapter(model: nn.Module, directory: str | os.PathLike, *, base_model: str, config: LoraConfig,
                 state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `model`'s adapters to `directory` (atomically) in peft's layout; returns the directory.

    `state_dict` (the model's full state dict, e.g. gathered from FSDP shards) supplies the tensors
    instead of the layers themselves.
    """
    layers = list(lora_layers(model))
    if not layers:
        raise LmstackError("the model has no LoRA adapters to save; call apply_lora(model, config) first")
    for name, layer in layers:
        if (layer.r, layer.scaling, layer.use_dora) != (config.r, config.scaling, config.use_dora):
            raise LmstackError(
                f"layer {name} was built with r={layer.r}, scaling={layer.scaling:g}, use_dora={layer.use_dora}, "
                "which differs from the config passed to save_adapter; pass the config used in apply_lora"
            )
    tensors = {
        f"{KEY_PREFIX}{name}.{suffix}": (tensor if state_dict is None else state_dict[f"{name}.{suffix}"])
        .detach().cpu().contiguous()
        for name, layer in layers
        for suffix, tensor in _adapter_tensors(layer).items()
    }
    peft_config = _peft_config(config, [name for name, _ in layers], base_model)
    directory = Path(directory)
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        (tmp / CONFIG_FILE).write_text(json.dumps(peft_config, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    return directory


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise LmstackError(f"{path} not found; an adapter directory needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LmstackError(f"{path} is not valid JSON ({err}); re-save the adapter") from err
    if raw.get("peft_type") != "LORA" or "r" not in raw or "lora_alpha" not in raw:
        raise LmstackError(f"{path} is not a LoRA adapter config (needs peft_type LORA, r, lora_alpha)")
    unsupported = {
        "bias": raw.get("bias", "none") != "none",
        "fan_in_fan_out": bool(raw.get("fan_in_fan_out")),
        "rank_pattern": bool(raw.get("rank_pattern")),
        "alpha_pattern": bool(raw.get("alpha_pattern")),
        "modules_to_save": bool(raw.get("modules_to_save")),
        "lora_bias": bool(raw.get("lora_bias")),
    }
    used = [name for name, is_set in unsupported.items() if is_set]
    if used:
        raise LmstackError(f"{path} uses {', '.join(used)}, which lmstack does not support; retrain without them")
    return raw


def _read_tensors(directory: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{module path: {tensor suffix: tensor}} from the safetensors file."""
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        old_format = (directory / "adapter_model.bin").exists()
        hint = " (adapter_model.bin is an old format; re-save it with safetensors)" if old_format else ""
        raise LmstackError(f"{path} not found{hint}")
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise LmstackError(f"{path} is not a readable safetensors file ({err}); re-save the adapter") from err
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        suffix = next((s for s in _TENSOR_SUFFIXES if key.endswith("." + s)), None)
        if not key.startswith(KEY_PREFIX) or suffix is None:
            raise LmstackError(f"unexpected tensor {key!r} in {path}; only LoRA linear adapters are supported")
        module_path = key[len(KEY_PREFIX) : -len(suffix) - 1]
        by_module.setdefault(module_path, {})[suffix] = tensor
    return by_module


def _copy_into(layer: LoraLinear, name: str, tensors: dict[str, torch.Tensor], directory: Path) -> None:
    expected = _adapter_tensors(layer)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise LmstackError(f"adapter in {directory} lacks {', '.join(missing)} for {name}; the file is incomplete")
    with torch.no_grad():
        for suffix, target in expected.items():
            source = tensors[suffix]
            if source.shape != target.shape:
                raise LmstackError(
                    f"{name}.{suffix} has shape {tuple(source.shape)} in {directory} but the model expects "
                    f"{tuple(target.shape)}; the adapter was trained for a different base model"
                )
            target.copy_(source)


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Apply the adapter saved in `directory` (by lmstack or by peft) to `model`, in place; returns it."""
    directory = Path(directory)
    raw = _read_config(directory)
    tensors = _read_tensors(directory)
    linear_names = {name for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)}
    unknown = sorted(set(tensors) - linear_names)
    if unknown:
        raise LmstackError(
            f"adapter in {directory} targets {unknown[0]}, which is not a linear layer of this model; "
            "load it into the base model it was trained on"
        )
    config = LoraConfig(
        r=raw["r"],
        alpha=raw["lora_alpha"],
        dropout=raw.get("lora_dropout", 0.0),
        target_modules=sorted(tensors),
        use_rslora=raw.get("use_rslora", False),
        use_dora=raw.get("use_dora", False),
    )
    apply_lora(model, config)
    for name, layer in lora_layers(model):
        _copy_into(layer, name, tensors[name], directory)
    return model


def read_lora_factors(directory: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{module path: (A [r, in], B [out, r], scaling)} of a saved LoRA adapter, for serving it
    unmerged beside others (the engine's multi-LoRA adds x A^T B^T * scaling to each layer)."""
    directory = Path(directory)
    raw = _read_config(directory)
    if raw.get("use_dora"):
        raise LmstackError(f"{directory} is a DoRA adapter, which cannot be served unmerged; merge it first "
                           "(lmstack train merge-adapter) and serve the merged model")
    config = LoraConfig(r=raw["r"], alpha=raw["lora_alpha"], use_rslora=raw.get("use_rslora", False))
    factors = {}
    for path, tensors in _read_tensors(directory).items():
        if "lora_A.weight" not in tensors or "lora_B.weight" not in tensors:
            raise LmstackError(f"adapter in {directory} lacks lora_A or lora_B for {path}; the file is incomplete")
        factors[path] = (tensors["lora_A.weight"], tensors["lora_B.weight"], config.scaling)
    return factors
