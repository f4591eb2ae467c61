"""A small offline corpus (Python standard library sources), a tokenizer trained on it, and a small
model pre-trained on it, made once per session and shared by the pre-training tests."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
from pretrain_recipes import pretrain_recipe

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Pure-Python packages present in every CPython 3.10+; about 1 MB of code and docstrings.
PACKAGES = ("json", "email", "logging", "importlib", "urllib", "http", "xml/dom")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for package in PACKAGES:
        for source in sorted((STDLIB / package).glob("*.py")):
            shutil.copy(source, folder / f"{package.replace('/', '_')}_{source.name}")
    return folder


@pytest.fixture(scope="session")
def trained_tokenizer(corpus_dir, tmp_path_factory) -> Path:
    from lmstack.pretrain.tokenizer_training import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer([corpus_dir], out, [1000])
    return out


@pytest.fixture(scope="session")
def pretrained(corpus_dir, trained_tokenizer, tmp_path_factory):
    """(PretrainResult, run folder) of a depth-2 model trained for 150 steps on the corpus."""
    from lmstack.pretrain.run import pretrain

    out_dir = tmp_path_factory.mktemp("pretrain") / "run"
    return pretrain(pretrain_recipe(corpus_dir, trained_tokenizer, out_dir)), out_dir
