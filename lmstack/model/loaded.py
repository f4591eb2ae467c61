"""`lmstack.load(ref)`: a model, its tokenizer and generation defaults, ready to use.

A GGUF is converted once into a Hugging Face directory in the lmstack home (fp32 safetensors);
every later load reads that directory, so start-up pays the dequantization only the first time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmstack.device import default_dtype, parse_dtype, resolve_device
from lmstack.errors import LmstackError
from lmstack.home import lmstack_home
from lmstack.model import hf_io
from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Any  # lmstack.tokenizer.Tokenizer
    config: ModelConfig
    generation_config: dict[str, Any]
    path: Path  # the HF directory the weights were read from
    name: str
    registry_id: str | None = None
    source: Path | None = None  # what the user pointed at (a GGUF or the directory itself)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    def __call__(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(input_ids, **kwargs)

    def generate(self, prompt: str | list[str], **kwargs):
        """Generate text for one prompt or a batch; see `lmstack.generate.text.generate_text`."""
        from lmstack.generate.text import generate_text

        return generate_text(self, prompt, **kwargs)

    def chat(self, messages: list[dict[str, str]], **kwargs):
        """Answer a conversation in OpenAI `messages` form with the model's chat template."""
        from lmstack.generate.text import chat_text

        return chat_text(self, messages, **kwargs)

    def save(self, path: str | Path, format: str = "hf", dtype: str | None = None) -> Path:
        """Export the model; `format="hf"` writes a directory transformers loads as is."""
        check_export_format(format)
        torch_dtype = parse_dtype(dtype) if dtype else torch.float32
        out = hf_io.write_model_dir(
            path, self.config, plain_state_dict(self.model), self.tokenizer, self.generation_config, torch_dtype
        )
        from lmstack import registry

        parent = self.registry_id or _registry_id_for(self.source or self.path)
        registry.record(
            "model", out, name=Path(out).name, operation="export",
            parents=[parent] if parent else [], recipe={"format": format, "dtype": str(torch_dtype)},
        )
        return Path(out)


EXPORT_FORMATS = ("hf",)


def check_export_format(format: str) -> None:
    if format not in EXPORT_FORMATS:
        raise LmstackError(f"unknown export format '{format}'; supported: {', '.join(EXPORT_FORMATS)}")


def plain_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The weights under transformers' names, with any LoRA adapters folded in (on a copy)."""
    from lmstack.peft import lora_layers, merge_lora

    if next(lora_layers(model), None) is None:
        return model.state_dict()
    import copy

    return merge_lora(copy.deepcopy(model)).state_dict()


def load(ref: str | Path, device: str | None = None, dtype: str | None = None, adapter: str | Path | None = None) -> LoadedModel:
    """A model from any reference; a PEFT adapter directory loads onto the base it names."""
    from lmstack.hub import resolve

    if adapter is None and (Path(ref) / "adapter_config.json").is_file():
        adapter, ref = Path(ref), _adapter_base(Path(ref))
    resolved = resolve(str(ref))
    directory = converted_dir(resolved.path) if resolved.kind == "gguf" else Path(resolved.path)
    loaded = load_directory(
        directory, device=device, dtype=dtype, name=resolved.name,
        registry_id=resolved.registry_id or _registry_id_for(resolved.path), source=Path(resolved.path),
    )
    if adapter is not None:
        from lmstack.peft import load_adapter

        load_adapter(loaded.model, adapter)
        loaded.model.to(loaded.device)
        loaded.name = f"{loaded.name}+{Path(adapter).name}"
        loaded.registry_id = _registry_id_for(Path(adapter)) or loaded.registry_id
    return loaded


def _adapter_base(adapter: Path) -> str:
    base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise LmstackError(f"{adapter}/adapter_config.json names no base model; pass the base model and --adapter")
    return base


def load_directory(
    directory: Path, device: str | None = None, dtype: str | None = None, name: str | None = None,
    registry_id: str | None = None, source: Path | None = None,
) -> LoadedModel:
    from lmstack.tokenizer import Tokenizer

    config = hf_io.read_config(directory)
    model = build_model(config, hf_io.read_state_dict(directory))
    target = resolve_device(device)
    model = model.to(device=target, dtype=parse_dtype(dtype) if dtype else default_dtype(target)).eval()
    return LoadedModel(
        model=model, tokenizer=Tokenizer.from_dir(directory), config=config,
        generation_config=hf_io.read_generation_config(directory), path=directory,
        name=name or directory.name, registry_id=registry_id, source=source,
    )


def build_model(config: ModelConfig, state_dict: dict[str, torch.Tensor]) -> Transformer:
    """A Transformer holding exactly these tensors (no random init, no copies)."""
    with torch.device("meta"):
        model = Transformer(config)
    result = model.load_state_dict(state_dict, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise LmstackError(
            f"weights do not fit a {config.family} model: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
    return model


def converted_dir(gguf_path: Path) -> Path:
    """The HF directory cached for this GGUF, converting it on first use."""
    from lmstack.model import gguf_io
    from lmstack.model.gguf_file import read_gguf
    from lmstack.tokenizer import Tokenizer

    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = lmstack_home() / "converted" / f"{gguf_path.stem}-{key}"
    if (out / "config.json").is_file():
        return out
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


def _registry_id_for(path: Path | None) -> str | None:
    if path is None:
        return None
    from lmstack import registry

    found = registry.find_by_path(path)
    return found.id if found else None
