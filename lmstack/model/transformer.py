"""The decoder-only transformer, in one file.

Every supported family (Llama 2/3, SmolLM2, Mistral, Mixtral, Qwen2, Gemma 3) runs through this
code; the differences are values in `ModelConfig`. Submodule names equal Hugging Face transformers' so a
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
        weight = self.weight.float() + self.offset if self.offset else self.weight.float()
        return F.rms_norm(x.float(), weight.shape, weight, self.eps).type_as(x)


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


# --- fused projections for inference -------------------------------------------------------------


class FusedLinear:
    """Linear layers that read the same input, run as one matmul (q/k/v, gate/up) for inference.

    Holds a copy of the layers' weights side by side; on a CPU in bf16 the copy is in oneDNN's
    packed layout, which runs the small matmuls of decoding about 1.5-2x faster than the plain
    one. The layers keep their own weights (state dicts and PEFT adapters see transformers'
    modules), and the copy is used only while it is current: same modules, weights not changed
    since (no training step), no hooks on them (adapters served by the engine hook them).
    """

    def __init__(self, layers: list[nn.Linear], pack: bool):
        self.state = [(l, l.weight._version, l.weight.data_ptr()) for l in layers]
        self.sizes = [l.out_features for l in layers]
        weight = torch.cat([l.weight.detach() for l in layers])
        biases = [l.bias for l in layers]
        self.bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
        self.packed = pack
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, 1) if pack else weight

    @staticmethod
    def can_fuse(layers: list[nn.Module]) -> bool:
        """Only plain nn.Linear layers (not quantized or adapter-wrapped ones) of one dtype, all with or without bias."""
        return all(type(l) is nn.Linear for l in layers) and len({(l.weight.dtype, l.weight.device) for l in layers}) == 1 \
            and len({l.bias is None for l in layers}) == 1

    def current(self, layers: list[nn.Module]) -> bool:
        for now, (then, version, pointer) in zip(layers, self.state):
            if now is not then or now._forward_hooks or now._forward_pre_hooks:
                return False
            weight = now._parameters["weight"]
            if weight._version != version or weight.data_ptr() != pointer:
                return False
        return True

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.packed:
            y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        else:
            y = F.linear(x, self.weight, self.bias)
        return list(y.split(self.sizes, dim=-1)) if len(self.sizes) > 1 else [y]

    def __deepcopy__(self, memo: dict) -> None:
        return None  # a copied model computes through its own layers (packed weights cannot be copied)


def fused(fusion: FusedLinear | None, layers: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The layers' outputs on x: through their fused copy when it is current, else one by one."""
    if fusion is not None and fusion.current(layers):
        return fusion(x)
    return [layer(x) for layer in layers]


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
        self.qkv: FusedLinear | None = None  # set by Transformer.prepare_for_inference
        self.out: FusedLinear | None = None

    def forward(self, x, cos, sin, mask, cache: AttentionCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = fused(self.qkv, [self.q_proj, self.k_proj, self.v_proj], x)
        q = q.view(B, T, self.num_heads, self.head_dim)
        k = k.reshape(B, T, self.num_kv_heads, self.head_dim)
        v = v.reshape(B, T, self.num_kv_heads, self.head_dim)
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
        return fused(self.out, [self.o_proj], out.reshape(B, T, -1))[0]


class MLP(nn.Module):
    """SwiGLU / GeGLU: down(act(gate(x)) * up(x)). `names` are the three projections' names in
    transformers (gate, up, down): Llama's by default; Mixtral's experts call them w1, w3, w2."""

    def __init__(self, c: ModelConfig, names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")):
        super().__init__()
        self.names = names
        gate, up, down = names
        setattr(self, gate, nn.Linear(c.hidden_size, c.intermediate_size, bias=False))
        setattr(self, up, nn.Linear(c.hidden_size, c.intermediate_size, bias=False))
        setattr(self, down, nn.Linear(c.intermediate_size, c.hidden_size, bias=False))
        self.act = nn.SiLU() if c.activation == "silu" else nn.GELU(approximate="tanh")
        self.gate_up: FusedLinear | None = None  # set by Transformer.prepare_for_inference
        self.down: FusedLinear | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = fused(self.gate_up, self.projections()[:2], x)
        return fused(self.down, self.projections()[2:], self.act(gate) * up)[0]

    def projections(self) -> list[nn.Module]:
        """gate, up, down, looked up each call: LoRA or quantization may have replaced them."""
        return [getattr(self, name) for name in self.names]


class SparseMoE(nn.Module):
    """Mixtral's MLP: the router (`gate`) scores every expert per token, the top `experts_per_token`
    run, and their outputs are mixed by the router's softmax probabilities renormalised over them."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.top_k = c.experts_per_token
        self.gate = nn.Linear(c.hidden_size, c.num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(c, names=("w1", "w3", "w2")) for _ in range(c.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        probabilities = F.softmax(self.gate(tokens).float(), dim=-1)
        weights, chosen = probabilities.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):  # each expert runs once, on the tokens routed to it
            rows, slot = (chosen == index).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(tokens[rows]) * weights[rows, slot, None])
        return out.view_as(x)


class Block(nn.Module):
    def __init__(self, c: ModelConfig, layer: int):
        super().__init__()
        self.sliding = c.layer_types[layer] == "sliding_attention"
        self.sandwich = c.sandwich_norm
        self.self_attn = Attention(c, layer)
        if c.num_experts:
            self.block_sparse_moe = SparseMoE(c)
        else:
            self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)
        # Llama: `post_attention_layernorm` is the norm before the MLP. Gemma: it normalises the
        # attention output, and two more norms wrap the MLP. The names follow transformers.
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)
        if c.sandwich_norm:
            self.pre_feedforward_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)
            self.post_feedforward_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_offset)

    @property
    def feed_forward(self) -> nn.Module:
        return self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp

    def forward(self, x, cos, sin, mask, cache):
        if self.sandwich:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache))
            return x + self.post_feedforward_layernorm(self.feed_forward(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.feed_forward(self.post_attention_layernorm(x))


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
        self.head: FusedLinear | None = None  # set by prepare_for_inference

    def prepare_for_inference(self, pack: bool) -> None:
        """Fuse q/k/v and gate/up into one matmul each (copies of the weights; see FusedLinear).

        `pack` also stores them, o_proj, down_proj and lm_head in oneDNN's packed layout (CPU,
        bf16). Layers that are not plain nn.Linear (quantized, adapter-wrapped) are left as they are.
        """
        if pack and FusedLinear.can_fuse([self.lm_head]) and not (self.head and self.head.current([self.lm_head])):
            self.head = FusedLinear([self.lm_head], pack)
        for layer in self.model.layers:
            a = layer.self_attn
            groups = {(a, "qkv"): [a.q_proj, a.k_proj, a.v_proj], (a, "out"): [a.o_proj]}
            for mlp in layer.modules():  # one MLP, or a mixture's experts
                if isinstance(mlp, MLP):
                    gate, up, down = mlp.projections()
                    groups |= {(mlp, "gate_up"): [gate, up], (mlp, "down"): [down]}
            for (owner, name), layers in groups.items():
                done = getattr(owner, name)
                if done is not None and done.packed == pack and done.current(layers):
                    continue
                if FusedLinear.can_fuse(layers) and (pack or len(layers) > 1):
                    setattr(owner, name, FusedLinear(layers, pack))

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
        logits = fused(self.head, [self.lm_head], self.model.norm(x))[0].float()
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
