"""A BERT-style bidirectional encoder (the network behind sentence embedders like all-MiniLM-L6-v2).

Unlike the decoder in `transformer.py`, every token sees every other (no causal mask), positions
are learned embeddings, and each sub-layer is followed by a post-LayerNorm. Module names equal
Hugging Face's `BertModel`, so a sentence-transformers checkpoint loads without renaming.

Shapes: B batch, T tokens, H heads, D head dim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.errors import LmstackError


@dataclass
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "EncoderConfig":
        if hf.get("model_type") not in ("bert", None) or hf.get("position_embedding_type", "absolute") != "absolute":
            raise LmstackError(f"unsupported encoder '{hf.get('model_type')}'; lmstack reads BERT encoders "
                               "with absolute positions (e.g. all-MiniLM-L6-v2)")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise LmstackError(f"unsupported encoder activation '{hf['hidden_act']}'; expected gelu")
        return cls(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        )


class Embeddings(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # Segment 0 for a single text; a cross-encoder marks the second text of a pair with 1.
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.num_heads = c.num_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                             attn_mask=mask)
        return out.transpose(1, 2).reshape(B, T, C)


class AddNorm(nn.Module):
    """A projection, then the residual added back and LayerNorm (BERT's post-norm)."""

    def __init__(self, c: EncoderConfig, inputs: int):
        super().__init__()
        self.dense = nn.Linear(inputs, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = AddNorm(c, c.hidden_size)


class Intermediate(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # BERT's gelu is the exact (erf) one


class Layer(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = AddNorm(c, c.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, mask), x)
        return self.output(self.intermediate(x), x)


class Stack(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_layers))


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Stack(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [B, T, C] of the last layer; `attention_mask` [B, T] is 1 for real tokens."""
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise LmstackError(f"{input_ids.shape[1]} tokens exceed the encoder's "
                               f"{self.config.max_position_embeddings} positions; truncate the text")
        mask = attention_mask[:, None, None, :].bool()  # every query may see every real key
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of the real tokens' hidden states: one vector per text [B, C]."""
    weights = attention_mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class CrossEncoder(nn.Module):
    """A BERT pair classifier (`BertForSequenceClassification`): the [CLS] state through the pooler
    (dense + tanh) and a linear head; one logit scores how well a passage answers a query."""

    def __init__(self, config: EncoderConfig, num_labels: int = 1):
        super().__init__()
        self.config = config
        self.bert = Encoder(config)
        self.bert.pooler = Pooler(config)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.bert.pooler(hidden[:, 0]))


class Pooler(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(cls_state))


def load_encoder(directory: str | Path) -> Encoder:
    """An Encoder from a Hugging Face BERT directory (`config.json` + `model.safetensors`)."""
    config, state = _read_bert(directory)
    with torch.device("meta"):
        model = Encoder(config)
    state = {name.removeprefix("bert."): tensor for name, tensor in state.items()}
    return _assign(model, state, directory)


def load_cross_encoder(directory: str | Path) -> CrossEncoder:
    """A CrossEncoder from a `BertForSequenceClassification` directory."""
    config, state = _read_bert(directory)
    labels = state["classifier.weight"].shape[0] if "classifier.weight" in state else 1
    with torch.device("meta"):
        model = CrossEncoder(config, labels)
    return _assign(model, state, directory)


def _read_bert(directory: str | Path) -> tuple[EncoderConfig, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    directory = Path(directory)
    config_file, weights_file = directory / "config.json", directory / "model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise LmstackError(f"{directory} is not an encoder directory (needs config.json and model.safetensors)")
    return EncoderConfig.from_hf(json.loads(config_file.read_text(encoding="utf-8"))), load_file(weights_file)


def _assign(model: nn.Module, state: dict[str, torch.Tensor], directory: str | Path):
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise LmstackError(f"{directory} lacks {len(missing)} encoder weights (first: {missing[0]}); "
                           "is it a BERT checkpoint?")
    model.load_state_dict({name: state[name] for name in expected}, assign=True)
    return model.eval()
