"""Turn whatever the user typed as a model into a checked file or folder on disk.

Every command takes a model reference in one of four forms: a catalog name
(`smollm2-135m-instruct`, pulled on first use), a `.gguf` file, a Hugging Face model folder, or a
registry id (`m-3f9a1c2b`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lmstack.errors import LmstackError
from lmstack.hub.catalog import CATALOG, did_you_mean
from lmstack.formats.gguf_file import read_gguf

_REGISTRY_ID = re.compile(r"^[a-z]-[0-9a-f]{8}$")
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class Resolved:
    kind: str  # 'gguf' (a file) or 'hf' (a Hugging Face layout folder)
    path: Path
    name: str
    registry_id: str | None


def is_registry_id(text: str) -> bool:
    return bool(_REGISTRY_ID.match(text))


def resolve(ref: str | Path) -> Resolved:
    """Find and check the model `ref` refers to; raise LmstackError saying what is accepted."""
    text = str(ref)
    if not text.strip():
        raise LmstackError("no model given; pass a catalog name (see `lmstack models`), a .gguf file, a model "
                           "folder or a registry id")
    if text in CATALOG:
        return _resolve_catalog_name(text)
    path = Path(text).expanduser()
    if path.exists() or path.suffix == ".gguf" or "/" in text:
        return _resolve_path(path)
    if _REGISTRY_ID.match(text):
        return _resolve_registry_id(text)
    raise LmstackError(
        f"{text!r} is not a model lmstack knows.{did_you_mean(text)} "
        f"Give a catalog name ({', '.join(CATALOG)}), a path to a .gguf file, a Hugging Face "
        "model folder (config.json + model.safetensors), or a registry id like m-3f9a1c2b "
        "(see `lmstack models`)"
    )


def _resolve_catalog_name(name: str) -> Resolved:
    from lmstack import registry
    from lmstack.hub.pull import is_pulled, pull

    entry = CATALOG[name]
    if not is_pulled(entry):
        size_mb = entry.size / 1e6
        print(f"note: {name} is not pulled yet, pulling it now ({size_mb:.0f} MB)", file=sys.stderr)
    path = pull(name)
    artifact = registry.find_by_path(path)
    return Resolved("gguf", path, name, artifact.id if artifact else None)


def _resolve_path(path: Path, name: str | None = None, registry_id: str | None = None) -> Resolved:
    """Check a GGUF file or HF folder; name it after its registry entry when it has one."""
    from lmstack import registry

    path = path.resolve()
    if path.is_dir():
        _check_hf_folder(path)
    else:
        read_gguf(path)  # also reports a missing file
    kind = "hf" if path.is_dir() else "gguf"
    if registry_id is None:
        artifact = registry.find_by_path(path)
        if artifact is not None:
            name, registry_id = artifact.name, artifact.id
    return Resolved(kind, path, name or path.stem, registry_id)


def _check_hf_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise LmstackError(f"{path} has no config.json, so it is not a Hugging Face model folder")
    if not any((path / weights).is_file() for weights in _HF_WEIGHTS):
        raise LmstackError(
            f"{path} has no model.safetensors (or model.safetensors.index.json); "
            "lmstack loads weights in safetensors format only"
        )


def _resolve_registry_id(artifact_id: str) -> Resolved:
    from lmstack import registry

    artifact = registry.get(artifact_id)
    if artifact.kind != "model":
        raise LmstackError(f"{artifact_id} is a {artifact.kind}, not a model; give a model's id")
    if not artifact.path.exists():
        raise LmstackError(
            f"{artifact_id} ({artifact.name}) was at {artifact.path}, which no longer exists"
        )
    return _resolve_path(artifact.path, artifact.name, artifact.id)
