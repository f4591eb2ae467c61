"""Fixtures for the quantization tests: a tiny model directory and texts for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from quant_tiny_models import word_text, write_tiny_dir


@pytest.fixture
def tiny_dir(tmp_path, tiny_config) -> Path:
    return write_tiny_dir(tmp_path / "tiny", tiny_config)


@pytest.fixture
def tiny_texts(tmp_path, tiny_config) -> tuple[Path, Path]:
    """(calibration text, held-out text) files for the tiny model."""
    calib, held_out = tmp_path / "calib.txt", tmp_path / "heldout.txt"
    calib.write_text(word_text(tiny_config.vocab_size, 600, seed=1))
    held_out.write_text(word_text(tiny_config.vocab_size, 300, seed=2))
    return calib, held_out
