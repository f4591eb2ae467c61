"""Is this file a whole GGUF? Checked from its header alone, without reading the weights.

A GGUF file is: magic `GGUF`, version, tensor count, metadata count, the metadata key/values, one
info record per tensor (name, shape, type, offset), padding to the alignment, then the tensor
data. Walking the header tells how long the file must be, so a truncated download is caught here
with a clear message instead of deep inside a loader.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from lmstack.errors import LmstackError

MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
# Sizes of the fixed-width metadata value types, by GGUF type code.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_DEFAULT_ALIGNMENT = 32


class _Cursor:
    """Reads little-endian values from a byte buffer, front to back."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.offset = 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("Q")
        raw = self.data[self.offset : self.offset + length]
        if len(raw) != length:
            raise struct.error("string runs past the end of the file")
        self.offset += length
        return raw.decode("utf-8", errors="replace")

    def value(self, type_code: int) -> int | str | None:
        """Read one metadata value; returns it when scalar or string, skips arrays (None)."""
        if type_code == _STRING:
            return self.string()
        if type_code == _ARRAY:
            item_type, count = self.unpack("I"), self.unpack("Q")
            if item_type in _SCALAR_SIZES:
                self.offset += count * _SCALAR_SIZES[item_type]
            else:
                for _ in range(count):
                    self.value(item_type)
            return None
        if type_code not in _SCALAR_SIZES:
            raise ValueError(f"unknown metadata type {type_code}")
        return self.unpack({1: "B", 2: "H", 4: "I", 8: "Q"}[_SCALAR_SIZES[type_code]])


def _tensor_bytes(shape: list[int], ggml_type: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    elements = 1
    for dim in shape:
        elements *= dim
    return elements // block_size * type_size


def _required_size(cursor: _Cursor) -> int:
    """Walk the header after the magic; return how many bytes the whole file must have."""
    version = cursor.unpack("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (only 2 and 3)")
    tensor_count, metadata_count = cursor.unpack("Q"), cursor.unpack("Q")
    alignment = _DEFAULT_ALIGNMENT
    for _ in range(metadata_count):
        key = cursor.string()
        value = cursor.value(cursor.unpack("I"))
        if key == "general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
    data_end = 0
    for _ in range(tensor_count):
        cursor.string()
        shape = [cursor.unpack("Q") for _ in range(cursor.unpack("I"))]
        ggml_type, offset = cursor.unpack("I"), cursor.unpack("Q")
        data_end = max(data_end, offset + _tensor_bytes(shape, ggml_type))
    data_start = -(-cursor.offset // alignment) * alignment
    return data_start + data_end


def check_gguf(path: Path) -> None:
    """Raise LmstackError unless `path` is a complete GGUF file."""
    if not path.is_file():
        raise LmstackError(f"{path} does not exist; give the path of a .gguf file or model folder")
    size = path.stat().st_size
    with path.open("rb") as file:
        if file.read(4) != MAGIC:
            raise LmstackError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                cursor = _Cursor(data)
                cursor.offset = len(MAGIC)
                required = _required_size(cursor)
            except struct.error:
                required = None
            except ValueError as error:
                raise LmstackError(f"{path} is not a GGUF file lmstack can read: {error}") from None
    if required is None or size < required:
        raise LmstackError(
            f"{path} is truncated ({size} bytes, the header asks for "
            f"{required if required is not None else 'more'}); download or copy it again"
        )
