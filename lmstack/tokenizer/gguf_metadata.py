"""Read the key/value metadata at the head of a GGUF file, and nothing else.

`gguf.GGUFReader` parses the whole file into numpy views, one per array element: ~10 s for
Gemma 3's 262144-token vocabulary. The metadata section is a flat run of length-prefixed values,
so walking it directly with `struct` takes a fraction of a second.

Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 key count,
then per key: string name, u32 value type, value. A string is a u64 length and UTF-8 bytes; an
array is a u32 element type, a u64 count and the elements.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from lmstack.errors import LmstackError

_STRING, _ARRAY = 8, 9
# value type id -> struct code of the fixed-size scalar types
_SCALAR_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _Cursor:
    """A read position in the memory-mapped file."""

    def __init__(self, buffer: mmap.mmap, position: int):
        self.buffer = buffer
        self.position = position

    def scalar(self, code: str) -> Any:
        (value,) = struct.unpack_from("<" + code, self.buffer, self.position)
        self.position += struct.calcsize(code)
        return value

    def string(self) -> str:
        length = self.scalar("Q")
        start = self.position
        self.position += length
        # Some vocabularies hold invalid UTF-8 pieces; llama.cpp keeps their bytes, we keep a
        # visible replacement rather than failing the whole load.
        return self.buffer[start : self.position].decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        # The hot loop for vocabularies and merge tables: locals avoid attribute lookups.
        buffer, unpack, position, values = self.buffer, struct.unpack_from, self.position, []
        for _ in range(count):
            (length,) = unpack("<Q", buffer, position)
            position += 8
            values.append(buffer[position : position + length].decode("utf-8", errors="replace"))
            position += length
        self.position = position
        return values

    def value(self, value_type: int) -> Any:
        if value_type in _SCALAR_CODES:
            return self.scalar(_SCALAR_CODES[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            element_type, count = self.scalar("I"), self.scalar("Q")
            if element_type == _STRING:
                return self.strings(count)
            if element_type in _SCALAR_CODES:
                code = _SCALAR_CODES[element_type]
                values = list(struct.unpack_from(f"<{count}{code}", self.buffer, self.position))
                self.position += count * struct.calcsize(code)
                return values
            return [self.value(element_type) for _ in range(count)]  # nested arrays
        raise ValueError(f"unknown GGUF value type {value_type}")


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """All metadata keys of a GGUF file as plain Python values (the tensor table is not read)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as error:
        raise LmstackError(f"cannot read GGUF file {path}: {error}; check the path") from error
    with buffer:
        if buffer[:4] != b"GGUF":
            raise LmstackError(f"{path} is not a GGUF file (bad magic bytes); pass a .gguf model file")
        version, _tensor_count, key_count = struct.unpack_from("<IQQ", buffer, 4)
        if version not in (2, 3):
            raise LmstackError(f"{path} is GGUF version {version}; only versions 2 and 3 are supported")
        cursor = _Cursor(buffer, 24)
        try:
            metadata = {}
            for _ in range(key_count):
                key = cursor.string()
                metadata[key] = cursor.value(cursor.scalar("I"))
        except (struct.error, ValueError) as error:
            raise LmstackError(f"{path} has corrupt GGUF metadata ({error}); re-download the file") from error
    return metadata
