"""Fixtures for the server tests: tiny random models and live servers on them (see serving.py)."""

from __future__ import annotations

import pytest
from serving import byte_tokenizer, live_server, random_bundle, word_tokenizer


@pytest.fixture(scope="module")
def word_server(word_bundle):
    with live_server(word_bundle) as server:
        yield server


@pytest.fixture(scope="module")
def byte_server(byte_bundle):
    with live_server(byte_bundle) as server:
        yield server


@pytest.fixture(scope="session")
def word_bundle():
    return random_bundle(word_tokenizer(), 4096, "tiny-words")


@pytest.fixture(scope="session")
def byte_bundle():
    return random_bundle(byte_tokenizer(), 1024, "tiny-bytes")

