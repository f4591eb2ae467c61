"""Model merging (LazyMergekit): mergekit's YAML configs, our methods, tensor-by-tensor streaming.

Names load on first use, so `lmstack merge --help` starts without torch.
"""

from lmstack.lazy import lazy_names

_LAZY = {"merge": "lmstack.merge.run", "MergeResult": "lmstack.merge.run", "load_config": "lmstack.merge.config",
         "MergeConfig": "lmstack.merge.config", "plan_merge": "lmstack.merge.plan", "METHODS": "lmstack.merge.config"}

__all__ = list(_LAZY)


__getattr__ = lazy_names(__name__, _LAZY)
