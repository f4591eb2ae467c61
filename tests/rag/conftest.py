"""Shared fixtures: the default embedder loaded once, the shipped corpus indexed once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm():
    from lmstack.rag.embeddings import MiniLM

    return MiniLM()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A copy of the shipped corpus (tests may change files in it)."""
    from lmstack.rag.evaluate import shipped_corpus

    target = tmp_path_factory.mktemp("corpus") / "lab"
    shutil.copytree(shipped_corpus(), target)
    return target


@pytest.fixture(scope="session")
def lab_index(corpus, minilm, tmp_path_factory) -> Path:
    from lmstack.rag.index import build_index

    path = tmp_path_factory.mktemp("index") / "lab.sqlite"
    build_index(corpus, path, embedder=minilm)
    return path
