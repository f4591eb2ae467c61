"""Interpretability and model editing: activations, refusal directions, abliteration.

Names load on first use, so `lmstack abliterate --help` starts without torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {"layer_activations": "lmstack.interp.activations"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmstack.interp' has no attribute {name!r}")
