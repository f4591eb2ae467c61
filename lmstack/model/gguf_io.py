"""A GGUF model (llama.cpp's format) as a ModelConfig and a transformers-named state dict.

Quantized tensors are dequantized with the `gguf` package's reference codecs. Two conventions of
llama.cpp's converter are undone so the weights match the original checkpoint:
- Llama q/k projections are stored with rows permuted for interleaved RoPE;
- Gemma RMSNorm weights are stored as (1 + w).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmstack.errors import LmstackError
from lmstack.model.config import ModelConfig
from lmstack.formats.gguf_file import GGUFFile

# llama.cpp architecture name -> our family. Mistral GGUFs say "llama".
GGUF_FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gemma3": "gemma3"}

# Gemma 3 facts llama.cpp hard-codes rather than storing in the file.
GEMMA3_GLOBAL_EVERY = 6
GEMMA3_LOCAL_ROPE_THETA = 10000.0

_BLOCK_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def config_from_gguf(gguf: GGUFFile) -> ModelConfig:
    meta = gguf.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise LmstackError(
            f"{gguf.path} has no readable general.architecture key, so its metadata is damaged or it is not a "
            "model file; re-download or re-export it"
        )
    if arch not in GGUF_FAMILIES:
        raise LmstackError(
            f"unsupported architecture '{arch}' in GGUF; supported: {', '.join(GGUF_FAMILIES)}"
        )
    family = GGUF_FAMILIES[arch]

    def get(key: str, default=None):
        return meta.get(f"{arch}.{key}", default)

    def required(key: str) -> int:
        value = get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LmstackError(f"{gguf.path}: metadata key {arch}.{key} is missing or not a positive integer "
                               f"({value!r}); the file is damaged, re-download or re-export it")
        return value

    hidden = required("embedding_length")
    heads = required("attention.head_count")
    layers = required("block_count")
    head_dim = get("attention.key_length") or hidden // heads
    layer_types: list[str] = []
    sliding_window = get("attention.sliding_window")
    if family == "gemma3":
        layer_types = [
            "full_attention" if (i + 1) % GEMMA3_GLOBAL_EVERY == 0 else "sliding_attention"
            for i in range(layers)
        ]
    elif sliding_window:
        layer_types = ["sliding_attention"] * layers
    vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens") or [])
    kv_heads = get("attention.head_count_kv", heads)
    return ModelConfig(
        family=family,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=required("feed_forward_length"),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads if isinstance(kv_heads, int) else int(kv_heads[0]),
        head_dim=head_dim,
        max_position_embeddings=get("context_length", 4096),
        rms_norm_eps=get("attention.layer_norm_rms_epsilon", 1e-6),
        rope_theta=get("rope.freq_base", 10000.0),
        rope_scaling=_rope_scaling(get),
        local_rope_theta=GEMMA3_LOCAL_ROPE_THETA if family == "gemma3" else None,
        sliding_window=sliding_window if layer_types else None,
        layer_types=layer_types,
        query_pre_attn_scalar=head_dim if family == "gemma3" else None,
        # llama.cpp stores no output head when it is the embedding matrix
        tie_word_embeddings=not any(info.name == "output.weight" for info in gguf.tensors),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
        **_traits(family),
    )


def _traits(family: str) -> dict[str, Any]:
    from lmstack.model.config import FAMILIES

    return FAMILIES[family]["traits"]


def _rope_scaling(get) -> dict[str, Any] | None:
    kind = get("rope.scaling.type")
    if kind in (None, "none"):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": get("rope.scaling.factor")}
    if kind == "yarn":
        return {
            "rope_type": "yarn",
            "factor": get("rope.scaling.factor"),
            "original_max_position_embeddings": get("rope.scaling.original_context_length"),
        }
    raise LmstackError(f"unsupported rope scaling '{kind}' in GGUF")


def hf_name(gguf_name: str, family: str) -> str | None:
    """transformers' parameter name for a GGUF tensor name (None for tensors we do not use)."""
    top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if gguf_name in top:
        return top[gguf_name]
    parts = gguf_name.split(".")  # blk.N.kind.(weight|bias)
    if parts[0] != "blk" or len(parts) != 4:
        return None
    _, layer, kind, suffix = parts
    if kind == "ffn_norm":  # the norm before the MLP has a different name in Gemma
        module = "pre_feedforward_layernorm" if family == "gemma3" else "post_attention_layernorm"
    else:
        module = _BLOCK_TENSORS.get(kind)
    return None if module is None else f"model.layers.{layer}.{module}.{suffix}"


def gguf_name(name: str, family: str) -> str:
    """The GGUF tensor name of a transformers parameter name (the inverse of `hf_name`)."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if name in top:
        return top[name]
    _, _, layer, *module, suffix = name.split(".")  # model.layers.N.<module path>.(weight|bias)
    module_path = ".".join(module)
    mlp_norm = "pre_feedforward_layernorm" if family == "gemma3" else "post_attention_layernorm"
    kind = "ffn_norm" if module_path == mlp_norm else \
        next(k for k, path in _BLOCK_TENSORS.items() if path == module_path)
    return f"blk.{layer}.{kind}.{suffix}"


def to_gguf_layout(name: str, array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """A tensor as llama.cpp stores it: Llama q/k rows interleaved for RoPE, Gemma norms as 1 + w."""
    if config.family == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
        heads = config.num_heads if "q_proj" in name else config.num_kv_heads
        half = array.shape[0] // heads // 2
        array = array.reshape(heads, 2, half, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)
    if config.norm_offset and name.endswith("norm.weight"):
        array = array + np.asarray(config.norm_offset, dtype=array.dtype)
    return array


def state_dict_from_gguf(gguf: GGUFFile, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Dequantized fp32 tensors under transformers' names (the config is only read)."""
    state: dict[str, torch.Tensor] = {}
    for info in gguf.tensors:
        name = hf_name(info.name, config.family)
        if name is None:
            continue
        array = gguf.tensor(info)
        if config.family == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_heads if "q_proj" in name else config.num_kv_heads
            array = _undo_rope_permutation(array, heads)
        if config.norm_offset and name.endswith("norm.weight"):
            array = array - np.float32(config.norm_offset)
        state[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return state


def _undo_rope_permutation(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp interleaves the two halves of each head's rows; put them back."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
