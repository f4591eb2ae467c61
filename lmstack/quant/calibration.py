"""Calibration: what the model's layers see on real text, for the methods that need it.

GPTQ needs each layer's input second moments (its Hessian, X^T X), AWQ and SmoothQuant the
magnitude of each input channel. They are collected block by block: the calibration text runs
through block i, the method quantizes block i, and the *quantized* block's output becomes block
i+1's input, so each layer is fitted to the errors of the layers before it (as GPTQ does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from lmstack.errors import LmstackError
from lmstack.model.transformer import Block, Transformer, build_mask
from lmstack.tokenizer import Tokenizer

MIN_CALIBRATION_TOKENS = 64


def calibration_text(content: str | list[dict], tokenizer: Tokenizer) -> str:
    """Text as is, or a dataset's records as text (chats through the chat template); the content
    comes from `settings.read_calibration_source`."""
    if isinstance(content, str):
        return content
    parts = []
    for record in content:
        if isinstance(record.get("text"), str):
            parts.append(record["text"])
        elif isinstance(record.get("messages"), list) and tokenizer.chat_template:
            parts.append(tokenizer.apply_chat_template(record["messages"]))
        elif isinstance(record.get("messages"), list):
            parts.append("\n".join(str(m.get("content", "")) for m in record["messages"]))
        elif isinstance(record.get("prompt"), str):
            parts.append(record["prompt"] + str(record.get("chosen", "")))
    if not parts:
        raise LmstackError("the calibration dataset has no 'text', 'messages' or 'prompt' records to calibrate on")
    return "\n\n".join(parts)


def calibration_windows(text: str, tokenizer: Tokenizer, *, samples: int, seq_len: int) -> torch.Tensor:
    """Up to `samples` windows of `seq_len` tokens [n, seq_len], spread evenly over the text."""
    ids = tokenizer.encode(text)
    if len(ids) < MIN_CALIBRATION_TOKENS:
        raise LmstackError(f"the calibration text has {len(ids)} tokens; give at least {MIN_CALIBRATION_TOKENS}")
    seq_len = min(seq_len, len(ids))
    starts = range(0, len(ids) - seq_len + 1, seq_len)
    count = min(samples, len(starts))
    chosen = [starts[round(i * (len(starts) - 1) / max(count - 1, 1))] for i in range(count)]
    return torch.tensor([ids[s : s + seq_len] for s in chosen])


@dataclass
class LayerInputs:
    """What one linear layer's inputs looked like over the calibration tokens (layers that read
    the same input share one)."""

    hessian: torch.Tensor  # sum of x x^T [K, K] (float32)
    abs_max: torch.Tensor  # max |x| per input channel [K]
    abs_mean: torch.Tensor  # mean |x| per input channel [K]
    tokens: int
    sample: torch.Tensor | None = None  # a subset of the raw inputs [n, K] (AWQ's loss)

    @property
    def mean_square(self) -> torch.Tensor:
        """E[x_k^2] per input channel: how much an error on input k costs, on average."""
        return self.hessian.diagonal() / max(self.tokens, 1)


@dataclass
class _Collector:
    keep_sample: int
    stats: dict[str, LayerInputs] = field(default_factory=dict)
    # inputs seen in this pass and their statistics; holding the tensors keeps their ids unique
    seen: list[tuple[torch.Tensor, LayerInputs]] = field(default_factory=list)

    def hook(self, name: str) -> Callable:
        def record(module: nn.Module, args: tuple) -> None:
            shared = next((stats for tensor, stats in self.seen if tensor is args[0]), None)
            if name not in self.stats and shared is not None:  # q/k/v (gate/up) read one input
                self.stats[name] = shared
                return
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            found = self.stats.get(name)
            if found is None:
                k = x.shape[-1]
                found = self.stats[name] = LayerInputs(torch.zeros(k, k, device=x.device),
                                                       torch.zeros(k, device=x.device),
                                                       torch.zeros(k, device=x.device), 0)
                self.seen.append((args[0], found))
            found.hessian += x.t() @ x
            found.abs_max = torch.maximum(found.abs_max, x.abs().amax(dim=0))
            found.abs_mean = (found.abs_mean * found.tokens + x.abs().sum(dim=0)) / (found.tokens + x.shape[0])
            found.tokens += x.shape[0]
            if self.keep_sample:
                rows = x if found.sample is None else torch.cat([found.sample, x])
                found.sample = rows[: self.keep_sample]
        return record


class BlockRunner:
    """Runs calibration windows through a model one decoder block at a time."""

    def __init__(self, model: Transformer, windows: torch.Tensor):
        self.model = model
        c = model.config
        positions = torch.arange(windows.shape[1]).expand(windows.shape[0], -1)
        with torch.no_grad():
            self.hidden = model.model.embed_tokens(windows).float()
            if c.scale_embeddings:
                self.hidden = self.hidden * c.embedding_multiplier
            self.global_rope = model.rotary_global(positions, torch.float32)
            self.local_rope = model.rotary_local(positions, torch.float32)
        length = windows.shape[1]
        self.local_mask = build_mask(length, 0, None, None, c.sliding_window, windows.device) \
            if c.sliding_window is not None else None

    def _run(self, block: Block) -> torch.Tensor:
        cos, sin = self.local_rope if block.sliding else self.global_rope
        mask = self.local_mask if block.sliding else None
        return block(self.hidden, cos, sin, mask, None)

    def blocks(self, keep_sample: int = 0) -> Iterator[tuple[int, Block, dict[str, LayerInputs]]]:
        """For each block: its index, the block, and its linear layers' input statistics.

        The caller changes the block in place (quantizes it); its output is then computed again
        with the changed block and passed on to the next one.
        """
        for index, block in enumerate(self.model.model.layers):
            collector = _Collector(keep_sample)
            handles = [module.register_forward_pre_hook(collector.hook(name))
                       for name, module in block.named_modules() if _is_linear(module)]
            try:
                with torch.no_grad():
                    self._run(block)
            finally:
                for handle in handles:
                    handle.remove()
            yield index, block, collector.stats
            with torch.no_grad():
                self.hidden = self._run(block)

    def head_inputs(self, keep_sample: int = 0) -> LayerInputs:
        """Statistics of the output head's input (the final norm of the last block's output)."""
        collector = _Collector(keep_sample)
        with torch.no_grad():
            collector.hook("lm_head")(self.model.lm_head, (self.model.model.norm(self.hidden),))
        return collector.stats["lm_head"]


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)
