"""Builders for the hub tests: a tiny complete GGUF file and minimal wheels."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def write_tiny_gguf(path: Path) -> Path:
    """A real, complete GGUF file with one small tensor."""
    from gguf import GGUFWriter

    writer = GGUFWriter(path, arch="llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(64 * 32, dtype=np.float32).reshape(64, 32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_wheel(folder: Path, distribution: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel `distribution`-1.0 holding `members`."""
    wheel = folder / f"{distribution}-1.0-py3-none-any.whl"
    dist_info = f"{distribution}-1.0.dist-info"
    project = distribution.replace("_", "-")
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        metadata = f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n"
        archive.writestr(f"{dist_info}/METADATA", metadata)
        tags = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        archive.writestr(f"{dist_info}/WHEEL", tags)
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel
