"""Load a model reference into memory: the network, its tokenizer, its generation defaults and
where it came from (`ModelBundle`), with a PEFT adapter applied when one is named.

A GGUF is converted once into a Hugging Face directory in the lmstack home (fp32 safetensors);
every later load memory-maps that directory, so start-up pays the dequantization only the first
time. Stages load through `load_model`; users get the same bundle with conveniences on top from
`lmstack.load`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lmstack import registry
from lmstack.device import parse_dtype, resolve_device
from lmstack.errors import LmstackError
from lmstack.home import atomic_path, lmstack_home, remove_stale_temporaries
from lmstack.hub.resolve import is_registry_id, resolve
from lmstack.model import hf_io
from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer
from lmstack.model.weights import build_model
from lmstack.peft import load_adapter
from lmstack.tokenizer import Tokenizer


@dataclass
class ModelBundle:
    """A loaded model and everything that travels with it."""

    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    generation_config: dict[str, Any]
    path: Path  # the HF directory the weights were read from
    name: str
    registry_id: str | None = None  # the model (or adapter) in the registry
    source: Path | None = None  # what the user pointed at (a GGUF, a directory)
    adapter: Path | None = None  # the PEFT adapter applied on top, if any

    @property
    def device(self) -> torch.device:
        return self.model.device

    def lineage_id(self) -> str:
        """This model's registry id; a model made outside lmstack is recorded as an import first."""
        if self.registry_id is None:
            self.registry_id = registry.id_for(self.source or self.path, name=self.name)
        return self.registry_id

    def lora_factors(self, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """The LoRA factors of an adapter (a PEFT directory or its registry id) for this model.

        The generation engine calls this to serve many adapters on the one base model.
        """
        from lmstack.peft.adapter_io import read_lora_factors

        path = Path(adapter).expanduser()
        if not path.exists() and is_registry_id(adapter):
            path = registry.get(adapter).path
        if not _is_adapter_dir(path):
            raise LmstackError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
        return read_lora_factors(path)

    def fields(self) -> dict[str, Any]:
        """The bundle's fields (shallow), to build a subclass around the same objects."""
        return {f.name: getattr(self, f.name) for f in fields(ModelBundle)}


def load_model(ref: str | Path, device: str | None = None, dtype: str | None = None,
               adapter: str | Path | None = None) -> ModelBundle:
    """A model from any reference; a PEFT adapter directory loads onto the base it names."""
    if adapter is None and _is_adapter_dir(ref):
        adapter, ref = Path(ref), adapter_base(Path(ref))
    if adapter is not None and not _is_adapter_dir(adapter):
        raise LmstackError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    resolved = resolve(str(ref))
    directory = converted_dir(resolved.path) if resolved.kind == "gguf" else Path(resolved.path)
    bundle = load_directory(directory, device=device, dtype=dtype, name=resolved.name,
                            registry_id=resolved.registry_id, source=Path(resolved.path),
                            cache_dtype=resolved.kind == "gguf")
    if adapter is not None:

        load_adapter(bundle.model, adapter)
        bundle.model.to(bundle.device, dtype=next(bundle.model.parameters()).dtype)
        bundle.name = f"{bundle.name}+{Path(adapter).name}"
        found = registry.find_by_path(adapter)
        bundle.registry_id = found.id if found else bundle.registry_id
        bundle.adapter = Path(adapter)
    return bundle


def _is_adapter_dir(ref: str | Path) -> bool:
    return bool(str(ref)) and (Path(ref) / "adapter_config.json").is_file()


def adapter_base(adapter: Path) -> str:
    """The base model an adapter directory names in its `adapter_config.json`."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LmstackError(f"{adapter}/adapter_config.json is not valid JSON ({error}); fix or re-save the adapter") \
            from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise LmstackError(f"{adapter}/adapter_config.json names no base model; pass the base model and --adapter")
    return base


def load_directory(
    directory: Path, device: str | None = None, dtype: str | None = None, name: str | None = None,
    registry_id: str | None = None, source: Path | None = None, cache_dtype: bool = False,
) -> ModelBundle:
    """A Hugging Face model directory, on `device` in `dtype` (auto: by the hardware).

    `cache_dtype` (lmstack's own GGUF conversions): keep a copy of the weights in `dtype` beside
    the fp32 ones, so later loads memory-map them as they are, without converting a byte.
    """
    config = hf_io.read_config(directory)
    target = resolve_device(device)
    torch_dtype = parse_dtype(dtype, target)
    state = hf_io.read_state_dict(directory)
    if cache_dtype and torch_dtype != torch.float32:
        state = _weights_in(directory, state, torch_dtype)
    model = build_model(config, state, hf_io.read_quantization(directory))
    model = model.to(device=target, dtype=torch_dtype).eval()
    return ModelBundle(
        model=model, tokenizer=Tokenizer.from_dir(directory), config=config,
        generation_config=hf_io.read_generation_config(directory), path=directory,
        name=name or directory.name, registry_id=registry_id, source=source,
    )


def _weights_in(directory: Path, state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The directory's weights in `dtype`, memory-mapped from a cached file written on first use."""
    from safetensors.torch import load_file, save_file

    path = directory / f"lmstack-{str(dtype).removeprefix('torch.')}.safetensors"
    if not path.is_file():
        with atomic_path(path) as tmp:
            save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    return load_file(path)


def converted_dir(gguf_path: Path) -> Path:
    """The HF directory cached for this GGUF, converting it on first use."""
    from lmstack.formats.gguf_file import read_gguf
    from lmstack.model import gguf_io

    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = lmstack_home() / "converted" / f"{gguf_path.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    remove_stale_temporaries(out.parent)  # left by a conversion that was killed
    gguf = read_gguf(gguf_path)
    config = gguf_io.config_from_gguf(gguf)
    state = gguf_io.state_dict_from_gguf(gguf, config)
    tokenizer = Tokenizer.from_gguf(gguf)
    generation = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": list(tokenizer.stop_token_ids),
        "pad_token_id": tokenizer.pad_token_id,
    }
    source = json.dumps({"gguf": str(gguf_path), "size": stat.st_size}, indent=2)
    return hf_io.write_model_dir(out, config, state, tokenizer, generation, extra_files={"lmstack_source.json": source})
