"""Read a model's activations on prompts: the residual stream entering each layer, or the input
each layer's MLP sees, at the last prompt token or averaged over the prompt's tokens.

Prompts run in right-padded batches with an attention mask: under causal attention the padding
comes after every real token, so it changes nothing that is read.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from lmstack.model.transformer import Transformer

# Where in each layer to read: the residual stream as the layer receives it, or the normalised
# hidden state its MLP (or mixture of experts) receives.
SITES = ("residual", "mlp")


@torch.inference_mode()
def layer_activations(model: Transformer, prompts: list[list[int]], *, site: str = "residual",
                      position: str = "last", batch_size: int = 16) -> torch.Tensor:
    """[layers, prompts, hidden] float32 activations of every prompt (token ids) at every layer.

    `position`: "last" reads the last prompt token, "mean" averages over the prompt's tokens.
    """
    if site not in SITES or position not in ("last", "mean"):
        raise ValueError(f"site must be one of {SITES} and position last or mean")
    layers = model.model.layers
    modules = [layer if site == "residual" else layer.feed_forward for layer in layers]
    rows: list[list[torch.Tensor]] = [[] for _ in layers]
    device = model.device
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        longest = max(len(p) for p in batch)
        ids = torch.tensor([p + [0] * (longest - len(p)) for p in batch], device=device)
        mask = torch.tensor([[1] * len(p) + [0] * (longest - len(p)) for p in batch], device=device)
        with _capture(modules) as captured:
            model(ids, attention_mask=mask, last_only=True)
        for layer, hidden in enumerate(captured):
            rows[layer].append(_pool(hidden.float(), mask, position))
    return torch.stack([torch.cat(layer_rows) for layer_rows in rows])


def _pool(hidden: torch.Tensor, mask: torch.Tensor, position: str) -> torch.Tensor:
    if position == "last":
        return hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
    weights = mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


@contextlib.contextmanager
def _capture(modules: list[torch.nn.Module]) -> Iterator[list[torch.Tensor]]:
    """The first positional input of each module on the next forward pass."""
    captured: list[torch.Tensor | None] = [None] * len(modules)

    def hook(index: int):
        def save(module, args):
            captured[index] = args[0].detach()
        return save

    handles = [module.register_forward_pre_hook(hook(i)) for i, module in enumerate(modules)]
    try:
        yield captured  # type: ignore[misc]
    finally:
        for handle in handles:
            handle.remove()
