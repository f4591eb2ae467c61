"""Fixtures for the quantization tests: a tiny model directory and texts for it."""

from __future__ import annotations

import os
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


@pytest.fixture
def scratch_home(tmp_path, monkeypatch) -> Path:
    """A throwaway lmstack home sharing the pulled models: GGUF files a test makes are converted
    here, not into the persistent test cache."""
    home = tmp_path / "scratch-home"
    home.mkdir()
    shared = Path(os.environ["LMSTACK_HOME"]) / "models"
    if shared.is_dir():
        (home / "models").symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("LMSTACK_HOME", str(home))
    return home
