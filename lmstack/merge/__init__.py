"""Model merging (LazyMergekit): mergekit's YAML configs, our methods, tensor-by-tensor streaming.

Names load on first use, so `lmstack merge --help` starts without torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {"merge": "lmstack.merge.run", "MergeResult": "lmstack.merge.run", "load_config": "lmstack.merge.config",
         "MergeConfig": "lmstack.merge.config", "plan_merge": "lmstack.merge.plan", "METHODS": "lmstack.merge.config"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmstack.merge' has no attribute {name!r}")
