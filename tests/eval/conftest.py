"""A tiny real model on disk for the session, and a fresh lmstack home per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import write_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama in Hugging Face layout (fp32), the same for every session."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(autouse=True)
def _fresh_home(request: pytest.FixtureRequest) -> None:
    """Registry writes go to a temporary lmstack home (real-model tests keep the shared test home)."""
    if "real" not in request.keywords:
        request.getfixturevalue("lmstack_home")
