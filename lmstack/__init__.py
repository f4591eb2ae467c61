"""lmstack: an open LLM's whole life on your own machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lmstack.api import LoadedModel


def load(ref: str, device: str | None = None, dtype: str | None = None, adapter: str | None = None) -> "LoadedModel":
    """Load a model by catalog name, GGUF path, HF directory, PEFT adapter directory or registry id."""
    from lmstack.api import load as _load  # imported here so `import lmstack` stays free of torch

    return _load(ref, device=device, dtype=dtype, adapter=adapter)
