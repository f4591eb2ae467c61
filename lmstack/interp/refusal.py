"""Refusal as a direction in the residual stream, and two ways to take it out.

Arditi et al. (2024) found that chat models refuse through one direction: the residual stream at
the last prompt token points further along it for prompts the model refuses than for prompts it
answers. Here:

- `refusal_directions`: per layer, the difference of the mean residual stream (entering that
  layer, at the last prompt token) over prompts to refuse and prompts to answer, normalised.
- `ablation_hooks`: at inference, remove the direction from everything written into the residual
  stream (the embeddings, every attention output, every MLP output), so the stream never has a
  component along it.
- `orthogonalize`: the same edit made in the weights, W <- W - r r^T W for every matrix that
  writes into the stream (rows of the embedding), so a saved model behaves as the hooked one.
- `refusal_rate`: greedy answers, and how many of them contain a refusal phrase.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.errors import LmstackError
from lmstack.generate.generate import generate_ids
from lmstack.generate.text import stop_token_ids
from lmstack.hub.load import ModelBundle
from lmstack.interp.activations import layer_activations
from lmstack.interp.prompts import REFUSAL_MARKERS
from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer

def prompt_ids(bundle: ModelBundle, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt as the model sees a user turn: through its chat template when it has one."""
    if bundle.tokenizer.chat_template is None:
        return [bundle.tokenizer.encode(prompt) for prompt in prompts]
    return [bundle.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=True) for prompt in prompts]


def refusal_directions(model: Transformer, refuse: list[list[int]], answer: list[list[int]]) -> torch.Tensor:
    """[layers, hidden]: the unit difference of means of the residual stream entering each layer, at
    the last prompt token, between prompts to refuse and prompts to answer."""
    difference = (layer_activations(model, refuse).mean(dim=1) - layer_activations(model, answer).mean(dim=1))
    return difference / difference.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def residual_writers(model: Transformer) -> list[nn.Module]:
    """The modules whose outputs are added into the residual stream."""
    writers: list[nn.Module] = [model.model.embed_tokens]
    for layer in model.model.layers:
        if model.config.sandwich_norm:  # Gemma normalises each output before adding it
            writers += [layer.post_attention_layernorm, layer.post_feedforward_layernorm]
        else:
            writers += [layer.self_attn, layer.feed_forward]
    return writers


@contextlib.contextmanager
def ablation_hooks(model: Transformer, direction: torch.Tensor) -> Iterator[None]:
    """Within the block, every write into the residual stream has its component along `direction` removed."""
    weight = model.lm_head.weight
    unit = (direction / direction.norm()).to(device=weight.device, dtype=weight.dtype)

    def project_out(module, args, output):
        return output - (output @ unit)[..., None] * unit

    handles = [module.register_forward_hook(project_out) for module in residual_writers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def orthogonalize(model: Transformer, direction: torch.Tensor) -> None:
    """Edit the weights so nothing can write along `direction` (in place): the hooks made permanent.

    A model whose output head shares the embedding matrix gets its own copy of the head first, so
    only what is written into the stream changes, not how the stream is read out.
    """
    check_orthogonalizable(model.config)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = nn.Parameter(model.model.embed_tokens.weight.detach().clone())
        model.config = dataclasses.replace(model.config, tie_word_embeddings=False)
    embed = model.model.embed_tokens.weight
    unit = (direction / direction.norm()).to(device=embed.device, dtype=torch.float32)
    embed.copy_(embed.float() - (embed.float() @ unit)[:, None] * unit)
    for layer in model.model.layers:
        outputs = [layer.self_attn.o_proj]
        outputs += [expert.w2 for expert in layer.block_sparse_moe.experts] if hasattr(layer, "block_sparse_moe") \
            else [layer.mlp.down_proj]
        for linear in outputs:
            w = linear.weight.float()
            linear.weight.copy_(w - unit[:, None] * (unit @ w)[None, :])
            if linear.bias is not None:
                linear.bias.copy_(linear.bias.float() - (linear.bias.float() @ unit) * unit)


def check_orthogonalizable(config: ModelConfig) -> None:
    if config.sandwich_norm:
        raise LmstackError(f"{config.family} normalises attention and MLP outputs after they are computed, so editing "
                           "the weights cannot remove the direction exactly; use --method hooks")


def is_refusal(answer: str, markers: Sequence[str] = REFUSAL_MARKERS) -> bool:
    text = answer.lower().replace("\u2019", "'")
    return any(marker in text for marker in markers)


@torch.inference_mode()
def refusal_rate(bundle: ModelBundle, prompts: list[list[int]], *, max_new_tokens: int = 32,
                 markers: Sequence[str] = REFUSAL_MARKERS, batch_size: int = 16) -> tuple[float, list[str]]:
    """The fraction of greedy answers that refuse, and the answers."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        new = generate_ids(bundle.model, prompts[start:start + batch_size], max_new_tokens=max_new_tokens,
                           stop_token_ids=stop_token_ids(bundle))
        answers += [bundle.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new]
    return sum(is_refusal(a, markers) for a in answers) / len(answers), answers


@torch.inference_mode()
def next_token_log_probs(model: Transformer, prompts: list[list[int]]) -> torch.Tensor:
    """[prompts, vocab] log-probabilities of the token after each prompt (right-padded batch)."""
    longest = max(len(p) for p in prompts)
    device = model.device
    ids = torch.tensor([p + [0] * (longest - len(p)) for p in prompts], device=device)
    mask = torch.tensor([[1] * len(p) + [0] * (longest - len(p)) for p in prompts], device=device)
    last = torch.zeros_like(mask, dtype=torch.bool)
    last[torch.arange(len(prompts)), mask.sum(dim=1) - 1] = True
    return F.log_softmax(model(ids, attention_mask=mask, logits_at=last).float(), dim=-1)


def kl_divergence(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean KL(reference || other) over rows of log-probabilities."""
    return float((reference.exp() * (reference - other)).sum(dim=-1).mean())
