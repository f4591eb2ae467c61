"""One knob sizes the model: depth. Width, heads and learning rate follow from it (nanochat's idea).

    width         = 64 x depth          (the aspect ratio stays fixed as models grow)
    heads         = width / 64          (head_dim 64; all heads keep their own keys and values)
    intermediate  = 8/3 x width, rounded up to a multiple of 32 (SwiGLU at the cost of a 4x MLP)
    learning rate = 3e-3 x sqrt(256 / width)   (wider models take smaller steps, as muP suggests)

The compute of a run is about 6 x parameters x tokens FLOPs, and the Chinchilla rule of thumb
puts the compute-optimal token budget at 20 tokens per parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmstack.errors import LmstackError
from lmstack.model.config import ModelConfig
from lmstack.tokenizer import Tokenizer

ASPECT_RATIO = 64
HEAD_DIM = 64
BASE_LR, BASE_WIDTH = 3e-3, 256
TOKENS_PER_PARAMETER = 20


@dataclass(frozen=True)
class Shape:
    depth: int
    width: int
    heads: int
    lr: float


def shape_for_depth(depth: int, width: int | None = None, heads: int | None = None) -> Shape:
    """The shape depth implies; an explicit width or head count overrides the derived one."""
    width = width or ASPECT_RATIO * depth
    heads = heads or max(1, width // HEAD_DIM)
    if width % heads:
        raise LmstackError(f"model.width {width} is not divisible by model.heads {heads}; each head gets "
                           "width / heads dimensions, so pick a width that is a multiple of the head count")
    if (width // heads) % 2:
        raise LmstackError(f"head dimension width / heads = {width // heads} is odd; rotary embeddings rotate "
                           "pairs of dimensions, so pick an even head dimension")
    return Shape(depth, width, heads, BASE_LR * math.sqrt(BASE_WIDTH / width))


def config_for(shape: Shape, tokenizer: Tokenizer, max_len: int) -> ModelConfig:
    """A Llama-style config (tied embeddings, RoPE, RMSNorm, SwiGLU) of this shape for this tokenizer."""
    intermediate = -(-(8 * shape.width // 3) // 32) * 32
    return ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=shape.width,
                       intermediate_size=intermediate, num_layers=shape.depth, num_heads=shape.heads,
                       num_kv_heads=shape.heads, head_dim=shape.width // shape.heads,
                       max_position_embeddings=max_len, rms_norm_eps=1e-5, tie_word_embeddings=True,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def parameter_count(config: ModelConfig, *, with_embeddings: bool = True) -> int:
    """Parameters of a model of this config, counted from the shapes (no model is built)."""
    attention = config.hidden_size * config.head_dim * (2 * config.num_heads + 2 * config.num_kv_heads)
    mlp = 3 * config.hidden_size * config.intermediate_size
    per_layer = attention + mlp + 2 * config.hidden_size
    embeddings = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    return config.num_layers * per_layer + config.hidden_size + (embeddings if with_embeddings else 0)


def training_flops(config: ModelConfig, tokens: int) -> float:
    """About 6 FLOPs per weight per token (forward 2, backward 4): the output head's matmul counts,
    the embedding lookup does not."""
    head = config.vocab_size * config.hidden_size
    return 6.0 * (parameter_count(config, with_embeddings=False) + head) * tokens


def chinchilla_tokens(config: ModelConfig) -> int:
    return TOKENS_PER_PARAMETER * parameter_count(config)


def initialise(model) -> None:
    """GPT-2's initialisation: matrices N(0, 0.02), the two projections that write into the residual
    stream scaled down by sqrt(2 x depth) so its variance does not grow with depth; norms stay 1."""
    import torch

    depth = model.config.num_layers
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim < 2:
                continue
            residual = name.endswith(("o_proj.weight", "down_proj.weight"))
            parameter.normal_(0.0, 0.02 / math.sqrt(2 * depth) if residual else 0.02)
