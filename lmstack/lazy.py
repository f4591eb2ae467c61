"""Names a package exports but imports only on first use, so `--help` and light commands start
without torch: a package sets `__getattr__ = lazy_names(__name__, {name: module, ...})`."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_names(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `names[name]` the first time `name` is read."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
