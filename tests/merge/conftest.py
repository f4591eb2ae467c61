"""The tiny model family every merge test reads (built once per module)."""

from __future__ import annotations

import pytest

from merge_models import fine_tune_of, random_state, save_model, tiny_llama


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory) -> dict[str, str]:
    """base, ft1, ft2, ft3: a tiny 4-layer Llama and three fine-tunes of it."""
    root = tmp_path_factory.mktemp("tiny-family")
    config = tiny_llama()
    base = random_state(config, 0)
    paths = {"base": save_model(root / "base", config, base)}
    for i in (1, 2, 3):
        paths[f"ft{i}"] = save_model(root / f"ft{i}", config, fine_tune_of(base, i))
    return paths
