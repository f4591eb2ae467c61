"""Interpretability and model editing: activations, refusal directions, abliteration.

Names load on first use, so `lmstack abliterate --help` starts without torch.
"""

from lmstack.lazy import lazy_names

_LAZY = {"layer_activations": "lmstack.interp.activations"}

__all__ = list(_LAZY)


__getattr__ = lazy_names(__name__, _LAZY)
