"""Many LoRA adapters of one base model served at once (S-LoRA style).

The base weights stay unmerged and shared. Requests name an adapter (or none); one step's
sequences may each use a different one, and they still run in one forward of the base model: a
forward hook on each adapted layer adds the low-rank updates, y += ((x A^T) * m) B^T, where A
and B stack the factors of every adapter in the step along the rank axis and the mask m keeps,
for each token, only its own adapter's columns. That is two small matmuls per layer whatever
the number of adapters, instead of a loop over them.

Adapters are read on demand through an `AdapterLoader` (the hub gives one that reads PEFT
directories) and at most `capacity` stay loaded; the least recently used one not serving a
request is dropped first. The hooks only read the layer's input and output, so they work on any
drop-in replacement of nn.Linear (quantized layers included).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Callable

import torch

from lmstack.errors import LmstackError

# name -> {module path: (A [r, in], B [out, r], scaling)}
AdapterLoader = Callable[[str], dict[str, tuple[torch.Tensor, torch.Tensor, float]]]


class MultiLora:
    def __init__(self, model: torch.nn.Module, loader: AdapterLoader, capacity: int):
        self.model, self.loader, self.capacity = model, loader, capacity
        self.modules = dict(model.named_modules())
        self.device, self.dtype = model.device, model.dtype
        self.adapters: OrderedDict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.in_use: Counter[str] = Counter()
        self.hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._stacks: dict[tuple[str, ...], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.step_mask: torch.Tensor | None = None  # [tokens, total rank] for this step
        self.step_stack: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def loaded(self) -> list[str]:
        return list(self.adapters)

    def check(self, name: str) -> None:
        """Load `name` now (so a bad adapter fails at submit), keeping it as recently used."""
        self._load(name)

    def acquire(self, name: str) -> None:
        self._load(name)
        self.in_use[name] += 1

    def release(self, name: str) -> None:
        self.in_use[name] -= 1
        if self.in_use[name] <= 0:
            del self.in_use[name]
        self._evict()

    def _load(self, name: str) -> None:
        if name in self.adapters:
            self.adapters.move_to_end(name)
            return
        factors = {}
        for path, (a, b, scaling) in self.loader(name).items():
            if path not in self.modules:
                raise LmstackError(f"adapter {name} targets {path}, which this model does not have; "
                                   "use it with the base model it was trained on")
            # The scaling is folded into B once, here.
            factors[path] = (a.to(self.device, self.dtype), (b.float() * scaling).to(self.device, self.dtype))
        self.adapters[name] = factors
        for path in factors.keys() - self.hooks.keys():
            self.hooks[path] = self.modules[path].register_forward_hook(self._hook(path))
        self._evict()

    def _evict(self) -> None:
        for name in list(self.adapters):
            if len(self.adapters) <= self.capacity:
                break
            if name not in self.in_use:
                del self.adapters[name]
                self._stacks = {k: v for k, v in self._stacks.items() if name not in k}

    def prepare(self, segments: list[tuple[int, int, str | None]]) -> None:
        """Set this step's adapters: (first flat token, tokens, adapter name) for each sequence."""
        names = tuple(sorted({name for _, _, name in segments if name is not None}))
        if not names:
            self.step_mask = None
            return
        if names not in self._stacks:
            self._stacks[names] = self._stack(names)
        self.step_stack = self._stacks[names]
        ranks = [next(iter(self.adapters[n].values()))[0].shape[0] for n in names]
        starts = [sum(ranks[:i]) for i in range(len(ranks))]
        total = sum(ranks)
        mask = torch.zeros(max(s + n for s, n, _ in segments), total, dtype=self.dtype)
        for start, length, name in segments:
            if name is not None:
                i = names.index(name)
                mask[start:start + length, starts[i]:starts[i] + ranks[i]] = 1
        self.step_mask = mask.to(self.device)

    def done(self) -> None:
        """The step's forward is over; the model computes without adapters again."""
        self.step_mask = None

    def close(self) -> None:
        for hook in self.hooks.values():
            hook.remove()
        self.hooks.clear()

    def _stack(self, names: tuple[str, ...]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the adapters' A and B side by side along the rank (zeros where one skips the layer)."""
        paths = set().union(*(self.adapters[n].keys() for n in names))
        stacks = {}
        for path in paths:
            a_parts, b_parts = [], []
            for name in names:
                any_a, any_b = next(iter(self.adapters[name].values()))
                a, b = self.adapters[name].get(path, (None, None))
                if a is None:
                    module = self.modules[path]
                    a = torch.zeros(any_a.shape[0], module.in_features, device=self.device, dtype=self.dtype)
                    b = torch.zeros(module.out_features, any_a.shape[0], device=self.device, dtype=self.dtype)
                a_parts.append(a)
                b_parts.append(b)
            stacks[path] = (torch.cat(a_parts), torch.cat(b_parts, dim=1))
        return stacks

    def _hook(self, path: str):
        def add_updates(module, inputs, output):
            if self.step_mask is None or path not in self.step_stack:
                return output
            a, b = self.step_stack[path]
            x = inputs[0]
            low = (x @ a.T) * self.step_mask[: x.shape[-2]]
            return output + low @ b.T

        return add_updates
