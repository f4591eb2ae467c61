"""Architectures as data: one `ModelConfig` describes every supported family.

The transformer in `transformer.py` reads only these fields; a family (Llama, Mistral, Qwen2,
Gemma 3) is a set of values, not a subclass. `FAMILIES` holds what differs between families and
how each one is named in a Hugging Face `config.json`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lmstack.errors import LmstackError


@dataclass
class ModelConfig:
    family: str  # a key of FAMILIES: "llama", "mistral", "qwen2", "gemma3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # HF-style scaling dict: {"rope_type": "linear"|"llama3"|"yarn", "factor": ..., ...}
    rope_scaling: dict[str, Any] | None = None
    # Gemma 3 rotates sliding-window layers with a smaller base than global layers.
    local_rope_theta: float | None = None
    sliding_window: int | None = None
    # One entry per layer: "full_attention" or "sliding_attention". Empty means all full.
    layer_types: list[str] = field(default_factory=list)
    attention_bias: bool = False  # a bias on q, k and v (Qwen2)
    attention_out_bias: bool = False  # a bias on the output projection too (Llama's attention_bias)
    activation: str = "silu"  # "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    norm_offset: float = 0.0  # Gemma stores RMSNorm weights as w and scales by (1 + w)
    qk_norm: bool = False  # Gemma 3 RMS-normalises queries and keys per head
    sandwich_norm: bool = False  # Gemma 2/3 also normalise the outputs of attention and MLP
    scale_embeddings: bool = False  # Gemma multiplies embeddings by sqrt(hidden_size)
    query_pre_attn_scalar: float | None = None  # attention scale is this ** -0.5 (default head_dim)
    final_logit_softcapping: float | None = None
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in (*SIZE_FIELDS, "max_position_embeddings"):
            if not _positive_int(getattr(self, name)):
                raise LmstackError(f"model config: {HF_NAMES.get(name, name)} must be a positive integer, "
                                   f"got {getattr(self, name)!r}")
        for name in ("rms_norm_eps", "rope_theta"):
            if not _positive_number(getattr(self, name)):
                raise LmstackError(f"model config: {name} must be a positive number, got {getattr(self, name)!r}")
        if self.rope_scaling is not None and not (
            isinstance(self.rope_scaling, dict) and _positive_number(self.rope_scaling.get("factor", 1.0))
        ):
            raise LmstackError(f"model config: rope_scaling must be a mapping with a positive factor, "
                               f"got {self.rope_scaling!r}")
        if self.sliding_window is not None and not _positive_int(self.sliding_window):
            raise LmstackError(f"model config: sliding_window must be a positive integer, got {self.sliding_window!r}")
        if not isinstance(self.layer_types, list) or not all(t in LAYER_TYPES for t in self.layer_types):
            raise LmstackError(f"model config: layer_types must list {' or '.join(sorted(LAYER_TYPES))}, "
                               f"got {self.layer_types!r}")
        if self.family not in FAMILIES:
            raise LmstackError(
                f"unsupported architecture '{self.family}'; supported: {', '.join(FAMILIES)}"
            )
        if not self.layer_types:
            self.layer_types = ["full_attention"] * self.num_layers
        if "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise LmstackError("model config: sliding_attention layers need a sliding_window size")
        if len(self.layer_types) != self.num_layers:
            raise LmstackError(
                f"config lists {len(self.layer_types)} layer_types for {self.num_layers} layers"
            )
        if self.num_heads % self.num_kv_heads:
            raise LmstackError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def embedding_multiplier(self) -> float:
        return math.sqrt(self.hidden_size) if self.scale_embeddings else 1.0

    # --- Hugging Face config.json --------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "ModelConfig":
        """Read a transformers `config.json` (v4 or v5 layout)."""
        model_type = hf.get("model_type", "")
        family = next((k for k, f in FAMILIES.items() if model_type in f["model_types"]), None)
        if family is None:
            raise LmstackError(
                f"unsupported architecture '{model_type}' in config.json; "
                f"supported model types: {', '.join(t for f in FAMILIES.values() for t in f['model_types'])}"
            )
        if "text_config" in hf:  # multimodal Gemma 3 wrapper: the language model is inside
            hf = {**hf["text_config"], "model_type": model_type}
        traits = FAMILIES[family]["traits"]
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if key not in hf:
                raise LmstackError(f"config.json has no '{key}'; it is required for a {model_type} model")
            _check_positive_int(key, hf[key])
        heads = hf["num_attention_heads"]
        global_rope, local_rope = _rope_from_hf(hf)
        layer_types = hf.get("layer_types") or []
        if not layer_types and hf.get("sliding_window") and family == "mistral":
            layer_types = ["sliding_attention"] * hf["num_hidden_layers"]
        if not layer_types and family == "qwen2" and hf.get("use_sliding_window"):
            raise LmstackError("Qwen2 checkpoints with use_sliding_window=true are not supported yet")
        return cls(
            family=family,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=global_rope.get("rope_theta", 10000.0),
            rope_scaling=_scaling_only(global_rope),
            local_rope_theta=local_rope.get("rope_theta") if local_rope else None,
            sliding_window=hf.get("sliding_window") if any(t == "sliding_attention" for t in layer_types) else None,
            layer_types=list(layer_types),
            attention_bias=traits.get("attention_bias", bool(hf.get("attention_bias"))),
            attention_out_bias=family == "llama" and bool(hf.get("attention_bias")),
            query_pre_attn_scalar=hf.get("query_pre_attn_scalar"),
            final_logit_softcapping=hf.get("final_logit_softcapping"),
            # transformers' default differs by family (False for Llama, Mistral and Qwen2)
            tie_word_embeddings=hf.get("tie_word_embeddings", FAMILIES[family]["tie_word_embeddings"]),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            **{k: v for k, v in traits.items() if k != "attention_bias"},
        )

    def to_hf(self) -> dict[str, Any]:
        """A transformers `config.json` for this model (readable by transformers v4 and v5)."""
        fam = FAMILIES[self.family]
        hf: dict[str, Any] = {
            "architectures": [fam["hf_class"]],
            "model_type": fam["model_types"][0],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "hidden_act": "silu" if self.activation == "silu" else "gelu_pytorch_tanh",
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if self.family == "llama":
            hf["attention_bias"] = self.attention_out_bias
        if self.family == "gemma3":
            hf["hidden_activation"] = hf["hidden_act"]
            hf["query_pre_attn_scalar"] = self.query_pre_attn_scalar or self.head_dim
            hf["rope_local_base_freq"] = self.local_rope_theta or self.rope_theta
            hf["final_logit_softcapping"] = self.final_logit_softcapping
            hf["attn_logit_softcapping"] = None
        if any(t == "sliding_attention" for t in self.layer_types):
            hf["sliding_window"] = self.sliding_window
            if self.family == "gemma3":
                hf["layer_types"] = self.layer_types
        else:
            hf["sliding_window"] = None
        return hf


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_positive_int(key: str, value: Any) -> None:
    if not _positive_int(value):
        raise LmstackError(f"config.json: {key} must be a positive integer, got {value!r}; fix the file")


def _rope_from_hf(hf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(global rope params, local rope params or None) from either transformers layout."""
    params = hf.get("rope_parameters")
    if params:  # transformers v5
        if "full_attention" in params:
            return params["full_attention"], params.get("sliding_attention")
        return params, None
    rope = dict(hf.get("rope_scaling") or {})
    if rope and "rope_type" not in rope and "type" in rope:
        rope["rope_type"] = rope.pop("type")
    rope["rope_theta"] = hf.get("rope_theta", 10000.0)
    local = {"rope_theta": hf["rope_local_base_freq"]} if "rope_local_base_freq" in hf else None
    return rope, local


def _scaling_only(rope: dict[str, Any]) -> dict[str, Any] | None:
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    if scaling.get("rope_type", "default") == "default":
        return None
    return scaling


# Sizes that must be positive integers, and their names in a transformers config.json.
SIZE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")
LAYER_TYPES = ("full_attention", "sliding_attention")
HF_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
            "num_kv_heads": "num_key_value_heads"}

# What makes each family different. `traits` are ModelConfig values every member shares;
# `tie_word_embeddings` is transformers' default for a config.json that does not say.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"hf_class": "LlamaForCausalLM", "model_types": ["llama"], "tie_word_embeddings": False, "traits": {}},
    "mistral": {"hf_class": "MistralForCausalLM", "model_types": ["mistral"], "tie_word_embeddings": False,
                "traits": {}},
    "qwen2": {
        "hf_class": "Qwen2ForCausalLM",
        "model_types": ["qwen2"],
        "tie_word_embeddings": False,
        "traits": {"attention_bias": True},
    },
    "gemma3": {
        "hf_class": "Gemma3ForCausalLM",
        "model_types": ["gemma3_text", "gemma3"],
        "tie_word_embeddings": True,
        "traits": {
            "activation": "gelu_tanh",
            "norm_offset": 1.0,
            "qk_norm": True,
            "sandwich_norm": True,
            "scale_embeddings": True,
        },
    },
}
