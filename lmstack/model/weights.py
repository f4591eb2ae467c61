"""A Transformer from a config and a state dict, after checking that the two describe one model.

The check runs before any tensor is assigned, so a `config.json` that disagrees with its weights
(a wrong `hidden_size`, a head count that does not divide, a missing layer) is reported with the
config key to fix instead of a size-mismatch traceback from deep inside PyTorch.

A quantized model (config.json's `quantization` section lists its quantized layers, see
`lmstack/model/quantized.py`) gets those layers built from their stored integers first; a tied
embedding then reads its rows from the quantized output head.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from lmstack.errors import LmstackError
from lmstack.model.config import HF_NAMES, ModelConfig
from lmstack.model.nf4 import NF4Linear
from lmstack.model.quantized import Int4Linear, Int8Linear, QuantizedEmbedding, QuantizedLinear
from lmstack.model.transformer import Transformer

QUANTIZED_KINDS: dict[str, type[QuantizedLinear]] = {cls.kind: cls for cls in (Int8Linear, Int4Linear, NF4Linear)}

# For each weight (by the end of its name), the config.json keys that set each of its dimensions.
_DIMENSION_KEYS: dict[str, tuple[str, ...]] = {
    "embed_tokens.weight": ("vocab_size", "hidden_size"),
    "lm_head.weight": ("vocab_size", "hidden_size"),
    "q_proj.weight": ("num_attention_heads x head_dim", "hidden_size"),
    "k_proj.weight": ("num_key_value_heads x head_dim", "hidden_size"),
    "v_proj.weight": ("num_key_value_heads x head_dim", "hidden_size"),
    "o_proj.weight": ("hidden_size", "num_attention_heads x head_dim"),
    "q_proj.bias": ("num_attention_heads x head_dim",),
    "k_proj.bias": ("num_key_value_heads x head_dim",),
    "v_proj.bias": ("num_key_value_heads x head_dim",),
    "o_proj.bias": ("hidden_size",),
    "gate_proj.weight": ("intermediate_size", "hidden_size"),
    "up_proj.weight": ("intermediate_size", "hidden_size"),
    "down_proj.weight": ("hidden_size", "intermediate_size"),
    "q_norm.weight": ("head_dim",),
    "k_norm.weight": ("head_dim",),
    "norm.weight": ("hidden_size",),
    "layernorm.weight": ("hidden_size",),
}


def build_model(config: ModelConfig, state_dict: dict[str, torch.Tensor],
                quantization: dict | None = None) -> Transformer:
    """A Transformer holding exactly these tensors (no random init, no copies).

    `quantization` is config.json's section of that name, for a quantized model.
    """
    try:
        with torch.device("meta"), _without_random_init():
            model = Transformer(config)
    except RuntimeError as error:  # sizes whose product overflows: a damaged file, not a model
        raise LmstackError(f"the model config asks for tensors too large to exist ({error}); "
                           "the file is damaged or not a model") from None
    if quantization:
        state_dict = install_quantized_layers(model, state_dict, quantization)
    check_weights(config, model, state_dict)
    model.load_state_dict(state_dict, strict=False, assign=True)
    model.tie_weights()
    return model


@contextmanager
def _without_random_init() -> Iterator[None]:
    """Skip nn.Linear's and nn.Embedding's random init: their weights are replaced right after.

    On the meta device the init would do nothing useful, and its first call imports torch's
    compiler stack, about 3 s of a cold start.
    """
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved


def install_quantized_layers(model: Transformer, state_dict: dict[str, torch.Tensor],
                             quantization: dict) -> dict[str, torch.Tensor]:
    """Put the quantized layers config.json lists in place; the state dict left for the rest."""
    layers = quantization.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise LmstackError("config.json's quantization section lists no layers; re-save the quantized model")
    rest = dict(state_dict)
    for name, spec in layers.items():
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind not in QUANTIZED_KINDS:
            raise LmstackError(f"config.json: quantized layer {name} has unknown kind {kind!r}; "
                               f"supported: {', '.join(QUANTIZED_KINDS)}")
        try:
            dense = model.get_submodule(name)
        except AttributeError:
            raise LmstackError(f"config.json: quantized layer {name} is not a layer of this model") from None
        prefix = f"{name}."
        tensors = {key[len(prefix):]: rest.pop(key) for key in list(rest) if key.startswith(prefix)}
        try:
            layer = QUANTIZED_KINDS[kind].from_state(spec, tensors)
        except KeyError as missing:
            raise LmstackError(f"the weights lack {prefix}{missing.args[0]} of quantized layer {name}; "
                               "the model files are incomplete, re-save the model") from None
        if (layer.out_features, layer.in_features) != (dense.out_features, dense.in_features):
            raise LmstackError(_shape_message(f"{name}.weight", (dense.out_features, dense.in_features),
                                              (layer.out_features, layer.in_features)))
        model.set_submodule(name, layer)
    if model.config.tie_word_embeddings and isinstance(model.lm_head, (Int8Linear, Int4Linear)):
        model.model.embed_tokens = QuantizedEmbedding(model.lm_head, torch.float32)
    return rest


def check_weights(config: ModelConfig, model: Transformer, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise LmstackError naming the config key when the weights do not fit the config."""
    # Layers already built (quantized ones) hold real tensors; the rest wait on the meta device.
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items() if p.is_meta}
    for name, tensor in state_dict.items():
        if name in expected and tuple(tensor.shape) != expected[name]:
            raise LmstackError(_shape_message(name, expected[name], tuple(tensor.shape)))
    optional = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(expected) - set(state_dict) - optional, key=_layer_order)
    unexpected = sorted(set(state_dict) - set(expected), key=_layer_order)
    if missing or unexpected:
        raise LmstackError(_missing_message(config, missing, unexpected))


def _shape_message(name: str, expected: tuple[int, ...], actual: tuple[int, ...]) -> str:
    keys = next((dims for suffix, dims in _DIMENSION_KEYS.items() if name.endswith(suffix)), ())
    if len(expected) == len(actual):
        wrong = [keys[i] for i in range(min(len(keys), len(expected))) if expected[i] != actual[i]]
    else:
        wrong = list(keys)
    hint = f"check {', '.join(dict.fromkeys(wrong))} in config.json" if wrong else "check config.json"
    return (f"the weights do not match config.json: {name} is {list(actual)} in the weights but the config "
            f"implies {list(expected)}; {hint}")


def _missing_message(config: ModelConfig, missing: list[str], unexpected: list[str]) -> str:
    layers = {index for n in missing + unexpected if (index := _layer_index(n)) is not None}
    if layers:
        if unexpected and not missing:
            return (f"the weights have more layers than config.json's {HF_NAMES['num_layers']}={config.num_layers} "
                    f"(e.g. layer {max(layers)}); fix num_hidden_layers")
        if missing and all(".layers." in n for n in missing) and not unexpected:
            return (f"config.json's {HF_NAMES['num_layers']}={config.num_layers}, but the weights lack layer "
                    f"{min(layers)}; fix num_hidden_layers")
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
    return (f"the weights do not fit a {config.family} model as config.json describes it: {'; '.join(parts)}; "
            "check model_type and the architecture keys of config.json")


def _layer_index(name: str) -> int | None:
    """N of `model.layers.N.…`; None for other names (and for a damaged, non-numeric N)."""
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 3 and parts[1] == "layers" and parts[2].isdigit() else None


def _layer_order(name: str) -> tuple:
    index = _layer_index(name)
    return (-1 if index is None else index, name)
