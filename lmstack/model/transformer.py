"""The decoder-only transformer, in one file.

Every supported family (Llama 2/3, SmolLM2, Mistral, Qwen2, Gemma 3) runs through this code; the
differences are values in `ModelConfig`. Submodule names equal Hugging Face transformers' so a
state dict moves between the two unchanged, and PEFT adapters address the same modules.

Shapes: B batch, T new tokens, S keys seen (cache + new), H heads, K kv heads, D head dim.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmstack.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, offset: float = 0.0):
        super().__init__()
        # Gemma keeps weights around 0 and scales by (1 + w); Llama keeps them around 1.
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: bf16 sums of squares lose too much precision.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * (self.offset + self.weight.float())).type_as(x)


# --- rotary position embeddings ------------------------------------------------------------------


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies for RoPE, and the factor that cos/sin are multiplied by."""
    # Always on the CPU: models are built on the meta device before their weights are assigned.
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim)
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":  # position interpolation: positions / factor
        return inv_freq / scaling["factor"], 1.0
    if kind == "llama3":
        return _llama3_frequencies(inv_freq, scaling), 1.0
    if kind == "yarn":
        return _yarn_frequencies(head_dim, theta, scaling)
    from lmstack.errors import LmstackError

    raise LmstackError(f"unsupported rope scaling '{kind}'; supported: linear, llama3, yarn")


def _llama3_frequencies(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    """Llama 3.1: slow down long wavelengths by `factor`, keep short ones, blend in between."""
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_context = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    in_between = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(in_between, blended, scaled)


def _yarn_frequencies(head_dim: int, theta: float, s: dict) -> tuple[torch.Tensor, float]:
    """YaRN: interpolate low frequencies, extrapolate high ones, ramp between; rescale attention."""
    factor = s["factor"]
    original = s.get("original_max_position_embeddings", 4096)
    beta_fast, beta_slow = s.get("beta_fast", 32), s.get("beta_slow", 1)
    attention_factor = s.get("attention_factor") or 0.1 * math.log(factor) + 1.0

    def correction_dim(rotations: float) -> float:
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), head_dim - 1)
    ramp = (torch.arange(head_dim // 2, dtype=torch.float32, device="cpu") - low) / max(high - low, 0.001)
    extrapolate = 1 - ramp.clamp(0, 1)
    base = theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim)
    inv_freq = (1 / (factor * base)) * (1 - extrapolate) + (1 / base) * extrapolate
    return inv_freq, attention_factor


class Rotary(nn.Module):
    """cos/sin tables computed on the fly from position ids (cheap, and exact for any position)."""

    def __init__(self, head_dim: int, theta: float, scaling: dict | None):
        super().__init__()
        inv_freq, self.attention_factor = rope_frequencies(head_dim, theta, scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq  # [B, T, D/2]
        angles = torch.cat([freqs, freqs], dim=-1)
        cos = (angles.cos() * self.attention_factor).to(dtype)
        sin = (angles.sin() * self.attention_factor).to(dtype)
        return cos[:, :, None], sin[:, :, None]  # [B, T, 1, D]: broadcast over heads


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


# --- KV cache ------------------------------------------------------------------------------------


class AttentionCache(Protocol):
    """What `forward(cache=...)` needs from a key/value cache (the engine's paged cache is one).

    `attend` stores the new keys and values of `layer` and returns the attention output of the
    new queries over every key the cache holds for their sequence, masking as it knows how:
    q [B, T, H, D], k and v [B, T, K, D] -> [B, T, H, D]. `window` is the layer's sliding window
    (None for full attention). The cache also supplies the new tokens' positions.
    """

    def position_ids(self) -> torch.Tensor: ...

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None,
               scale: float) -> torch.Tensor: ...


# --- the blocks ----------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, c: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.scale = c.attention_scale
        self.window = c.sliding_window if c.layer_types[layer] == "sliding_attention" else None
        self.q_proj = nn.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.attention_bias)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=c.attention_out_bias)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, c.norm_offset)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, c.norm_offset)

    def forward(self, x, cos, sin, mask, cache: AttentionCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            out = cache.attend(self.layer, q, k, v, self.window, self.scale)
        else:
            # enable_gqa lets groups of query heads share a kv head without copying them.
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                is_causal=mask is None and T > 1, scale=self.scale, enable_gqa=self.num_kv_heads != self.num_heads,
            ).transpose(1, 2)
        return self.o_proj(out.reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        self.act = nn.SiLU() if c.activation == "silu" else nn.GELU(approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU / GeGLU


class Block(nn.Module):
    def __init__(self, c: ModelConfig, layer: int):
        super().__init__()
        self.sliding = c.layer_types[layer] == "sliding_attention"
        self.sandwich = c.sandwich_norm
        self.self_attn = Attention(c, layer)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)
        # Llama: `post_attention_layernorm` is the norm before the MLP. Gemma: it normalises the
        # attention output, and two more norms wrap the MLP. The names follow transformers.
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)
        if c.sandwich_norm:
            self.pre_feedforward_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)
            self.post_feedforward_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)

    def forward(self, x, cos, sin, mask, cache):
        if self.sandwich:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """The stack under `model.` in transformers' naming."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c, i) for i in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        self.rotary_global = Rotary(config.head_dim, config.rope_theta, config.rope_scaling)
        # Gemma 3's sliding layers use a plain rotary with their own base and no scaling.
        local_theta = config.local_rope_theta or config.rope_theta
        local_scaling = None if config.local_rope_theta else config.rope_scaling
        self.rotary_local = Rotary(config.head_dim, local_theta, local_scaling)
        self.gradient_checkpointing = False

    def tie_weights(self) -> None:
        """Share the embedding matrix with the output head (call again after assigning weights).

        A quantized head shares its storage the other way: the embedding reads rows from it.
        """
        if self.config.tie_word_embeddings and isinstance(self.lm_head, nn.Linear):
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype: the final norm's (a norm is never quantized, an embedding may be)."""
        return self.model.norm.weight.dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
        last_only: bool = False,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, V] in fp32 (T = 1 with `last_only`).

        attention_mask: [B, T] 1 for real tokens, 0 for padding.
        segment_ids: [B, T] packed samples; tokens attend only within their own segment.
        cache: keys and values of earlier tokens (the generation engine's paged cache); it gives
            the positions and the masking, so the three arguments above stay None with it.
        logits_at: [B, T] bool; only those positions go through the output head, returned as
            [N, V]. Training reads logits where a label is trained only: the vocabulary projection
            is a fifth of a small model's compute, and most positions are prompt or padding.
        """
        c = self.config
        if cache is not None:
            position_ids = cache.position_ids()
        elif position_ids is None:
            position_ids = default_positions(input_ids, attention_mask)
        x = self.model.embed_tokens(input_ids)
        if c.scale_embeddings:
            x = x * torch.tensor(c.embedding_multiplier, dtype=x.dtype)
        cos_g, sin_g = self.rotary_global(position_ids, x.dtype)
        cos_l, sin_l = self.rotary_local(position_ids, x.dtype)
        full_mask = local_mask = None
        if cache is None:
            full_mask = build_mask(input_ids.shape[1], attention_mask, segment_ids, None, x.device)
            if c.sliding_window is not None:
                local_mask = build_mask(input_ids.shape[1], attention_mask, segment_ids, c.sliding_window, x.device)
            else:
                local_mask = full_mask
        for layer in self.model.layers:
            cos, sin, mask = (cos_l, sin_l, local_mask) if layer.sliding else (cos_g, sin_g, full_mask)
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, cos, sin, mask, cache, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache)
        if last_only:
            x = x[:, -1:]
        elif logits_at is not None:
            x = x[logits_at]
        logits = self.lm_head(self.model.norm(x)).float()
        if c.final_logit_softcapping:
            cap = c.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits


def default_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Positions count real tokens only, so left padding does not shift them."""
    T = input_ids.shape[1]
    if attention_mask is None:
        return torch.arange(T, device=input_ids.device).expand(input_ids.shape[0], T)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def build_mask(
    T: int,
    attention_mask: torch.Tensor | None,
    segment_ids: torch.Tensor | None,
    window: int | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean [B|1, 1, T, T] mask (True = may attend), or None for plain causal attention."""
    if attention_mask is None and segment_ids is None and (window is None or T <= window):
        return None
    q = torch.arange(T, device=device)[:, None]
    k = torch.arange(T, device=device)[None, :]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (q - k < window)
    allowed = allowed[None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :].bool()
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
    # A padding query would see nothing and give NaN; let every token see itself.
    allowed = allowed | (q == k)[None]
    return allowed[:, None]
