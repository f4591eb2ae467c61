"""Fixtures for the peft tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def input_ids() -> torch.Tensor:
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(7))
