"""The input models of a merge, read lazily: names, shapes and dtypes from the safetensors headers,
one tensor at a time on request, so a merge holds about one tensor of each input in memory.

A model reference is anything lmstack accepts (catalog name, GGUF file, HF folder, registry id);
a GGUF is read through the HF folder lmstack caches for it (`converted_dir`, converted once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.hub.load import converted_dir
from lmstack.hub.resolve import Resolved, resolve
from lmstack.model import hf_io
from lmstack.model.config import ModelConfig

SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


@dataclass
class ModelSource:
    """One input model: its config, where each tensor lives, and each tensor's shape and dtype."""

    ref: str  # as the config wrote it
    resolved: Resolved
    config: ModelConfig
    directory: Path | None = None  # the HF folder, known once `open_tensors` ran
    files: dict[str, Path] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def key(self) -> Path:
        """Two spellings of one model (a name and its path) are the same input."""
        return self.resolved.path

    def open_tensors(self) -> None:
        """Convert a GGUF if needed (cached) and read every tensor's name, shape and dtype."""
        from safetensors import safe_open

        self.directory = converted_dir(self.resolved.path) if self.resolved.kind == "gguf" else self.resolved.path
        for file in _weight_files(self.directory):
            try:
                with safe_open(file, framework="pt") as handle:
                    for name in handle.keys():
                        part = handle.get_slice(name)
                        dtype = part.get_dtype()
                        if dtype not in SAFETENSORS_DTYPES:
                            raise LmstackError(f"{file}: tensor {name} is {dtype}; merging needs float weights")
                        self.files[name] = file
                        self.shapes[name] = tuple(part.get_shape())
                        self.dtypes[name] = SAFETENSORS_DTYPES[dtype]
            except LmstackError:
                raise
            except Exception as error:  # the safetensors library raises its own error types
                raise LmstackError(f"{file} is not a readable safetensors file ({error}); re-export the model") \
                    from None

    def read(self, name: str, device: torch.device) -> torch.Tensor:
        """One tensor in float32 on `device`, safe to modify in place: safetensors maps it copy-on-write,
        and its pages are released when the tensor is (no whole-file map stays open)."""
        from safetensors import safe_open

        with safe_open(self.files[name], framework="pt") as handle:
            tensor = handle.get_tensor(name)
        return tensor.to(device=device, dtype=torch.float32)

    def lineage_id(self) -> str:
        return self.resolved.registry_id or registry.id_for(self.resolved.path, name=self.name)


def open_source(ref: str) -> ModelSource:
    """Resolve a reference and read its config only (cheap: no weights, no GGUF conversion)."""
    resolved = resolve(ref)
    if resolved.kind == "gguf":
        from lmstack.formats.gguf_file import read_gguf
        from lmstack.model.gguf_io import config_from_gguf

        config = config_from_gguf(read_gguf(resolved.path))
    else:
        config = hf_io.read_config(resolved.path)
    return ModelSource(ref=ref, resolved=resolved, config=config)


def open_sources(refs: list[str]) -> dict[str, ModelSource]:
    """Each reference resolved once; two spellings of one model (a name and its path) share a source."""
    by_key: dict[Path, ModelSource] = {}
    sources = {}
    for ref in dict.fromkeys(refs):
        source = open_source(ref)
        sources[ref] = by_key.setdefault(source.key, source)
    return sources


def distinct(sources: dict[str, ModelSource]) -> list[ModelSource]:
    """The sources of `open_sources`, each model once, in order of first mention."""
    return list({id(source): source for source in sources.values()}.values())


def _weight_files(directory: Path) -> list[Path]:
    index = directory / hf_io.SHARD_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise LmstackError(f"{index} is not a valid shard index ({error}); fix or re-export the model") from None
        return [directory / name for name in sorted(set(weight_map.values()))]
    return [directory / "model.safetensors"]
