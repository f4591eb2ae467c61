"""Fixtures of the hostile-input suite (the harness itself is `harness.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import fresh_home


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh lmstack home whose caches are the shared test caches (models are pulled once)."""
    return fresh_home(tmp_path / "home")
