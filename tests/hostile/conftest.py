"""Fixtures of the hostile-input suite (the harness itself is `harness.py`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh lmstack home whose model cache is the shared test cache (models are pulled once)."""
    shared = Path(os.environ["LMSTACK_HOME"])
    fresh = tmp_path / "home"
    fresh.mkdir()
    for folder in ("models", "converted"):
        if (shared / folder).is_dir():
            (fresh / folder).symlink_to(shared / folder, target_is_directory=True)
    return fresh
