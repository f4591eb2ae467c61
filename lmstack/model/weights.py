"""A Transformer from a config and a state dict, after checking that the two describe one model.

The check runs before any tensor is assigned, so a `config.json` that disagrees with its weights
(a wrong `hidden_size`, a head count that does not divide, a missing layer) is reported with the
config key to fix instead of a size-mismatch traceback from deep inside PyTorch.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from lmstack.errors import LmstackError
from lmstack.model.config import HF_NAMES, ModelConfig
from lmstack.model.transformer import Transformer

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


def build_model(config: ModelConfig, state_dict: dict[str, torch.Tensor]) -> Transformer:
    """A Transformer holding exactly these tensors (no random init, no copies)."""
    try:
        with torch.device("meta"), _without_random_init():
            model = Transformer(config)
    except RuntimeError as error:  # sizes whose product overflows: a damaged file, not a model
        raise LmstackError(f"the model config asks for tensors too large to exist ({error}); "
                           "the file is damaged or not a model") from None
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


def check_weights(config: ModelConfig, model: Transformer, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise LmstackError naming the config key when the weights do not fit the config."""
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
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
    if any(".layers." in n for n in missing + unexpected):
        layers = {int(n.split(".")[2]) for n in missing + unexpected if ".layers." in n}
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


def _layer_order(name: str) -> tuple:
    parts = name.split(".")
    return (int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else -1, name)
