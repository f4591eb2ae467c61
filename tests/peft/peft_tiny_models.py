"""Tiny random Llama models from transformers, the reference our LoRA must agree with (test helpers)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")


def make_tiny_llama(seed: int = 0) -> torch.nn.Module:
    """The same random model for the same seed: hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 128."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config).eval()


def randomize_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-zero A, B and a perturbed DoRA magnitude, so every saved tensor affects the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_A" in name or "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.1 * torch.randn(param.shape, generator=generator))


def logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids).logits
