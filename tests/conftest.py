"""Shared fixtures: the real models (pulled once into the user's lmstack home) and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest


def _pull(name: str) -> Path:
    from lmstack.hub import pull

    return pull(name)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return _pull("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    return _pull("gemma-3-270m")


@pytest.fixture
def tiny_config():
    """A Llama-style config small enough that a model builds and runs in milliseconds."""
    from lmstack.model.config import ModelConfig

    return ModelConfig(
        family="llama", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=256,
    )
