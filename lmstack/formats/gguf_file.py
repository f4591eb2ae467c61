"""The GGUF container, read directly: header metadata, the tensor table, and raw tensor bytes.

`gguf.GGUFReader` builds a numpy view for every array element (about 10 s for Gemma 3's
262144-token vocabulary); walking the header with `struct` takes a fraction of a second, and the
tensor data is memory-mapped, not read. The `gguf` package still does the dequantization.

Layout (v2/v3, little-endian): "GGUF", u32 version, u64 tensor count, u64 key count; per key a
string name, a u32 value type and the value; per tensor a string name, u32 number of dimensions,
u64 dimensions (innermost first), u32 ggml type, u64 offset; padding to `general.alignment`; data.
A string is a u64 length and UTF-8 bytes; an array a u32 element type, u64 count and the elements.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmstack.errors import LmstackError

MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
# value type id -> struct code of the fixed-size scalar types
_SCALAR_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_DEFAULT_ALIGNMENT = 32
# What parsing a damaged header raises: short reads, impossible counts, unknown types, bad sizes.
_DAMAGE = (struct.error, ValueError, KeyError, TypeError, IndexError, OverflowError, ZeroDivisionError, MemoryError)


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first), e.g. [out_features, in_features]
    ggml_type: int
    offset: int  # from the start of the data section

    @property
    def nbytes(self) -> int:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(self.ggml_type)]
        return math.prod(self.shape) // block * type_size


@dataclass
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_start: int

    def tensor(self, info: TensorInfo) -> np.ndarray:
        """The tensor as fp32 [*shape], dequantized if it is stored quantized."""
        try:
            return self._tensor(info)
        except LmstackError:
            raise
        except _DAMAGE as error:
            raise LmstackError(f"{self.path}: tensor {info.name!r} is damaged ({type(error).__name__}); "
                               "download or copy the file again") from None

    def _tensor(self, info: TensorInfo) -> np.ndarray:
        from gguf import GGMLQuantizationType
        from gguf.constants import GGML_QUANT_SIZES
        from gguf.quants import dequantize

        kind = GGMLQuantizationType(info.ggml_type)
        raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.data_start + info.offset, shape=(info.nbytes,))
        if kind == GGMLQuantizationType.F32:
            return np.array(raw.view(np.float32)).reshape(info.shape)
        if kind == GGMLQuantizationType.F16:
            return raw.view(np.float16).astype(np.float32).reshape(info.shape)
        block, type_size = GGML_QUANT_SIZES[kind]
        rows = raw.reshape(-1, info.shape[-1] // block * type_size)
        try:
            return dequantize(rows, kind).reshape(info.shape)
        except NotImplementedError as e:
            raise LmstackError(f"tensor {info.name} is stored as {kind.name}, which cannot be dequantized") from e


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
        if self.position > len(self.buffer):
            raise struct.error("a string runs past the end of the file")
        # Some vocabularies hold invalid UTF-8 pieces; keep a visible replacement, not a failure.
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


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse the header and tensor table; a missing, foreign or truncated file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise LmstackError(f"{path} does not exist; give the path of a .gguf file or model folder")
    size = path.stat().st_size
    with open(path, "rb") as file:
        if file.read(4) != MAGIC:
            raise LmstackError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            try:
                gguf = _parse(path, buffer)
                required = gguf.data_start + max((t.offset + t.nbytes for t in gguf.tensors), default=0)
            except _DAMAGE as error:
                raise LmstackError(f"{path} is truncated or corrupt ({type(error).__name__}: {str(error)[:100]}); "
                                   "download or copy it again") from None
    if size < required:
        raise LmstackError(f"{path} is truncated ({size} bytes, its header asks for {required}); download or copy it again")
    return gguf


def _parse(path: Path, buffer: mmap.mmap) -> GGUFFile:
    version, tensor_count, key_count = struct.unpack_from("<IQQ", buffer, 4)
    if version not in (2, 3):
        raise LmstackError(f"{path} is GGUF version {version}; only versions 2 and 3 are supported")
    cursor = _Cursor(buffer, 24)
    metadata = {}
    for _ in range(key_count):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.scalar("I"))
    tensors = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = [cursor.scalar("Q") for _ in range(cursor.scalar("I"))]
        ggml_type, offset = cursor.scalar("I"), cursor.scalar("Q")
        tensors.append(TensorInfo(name, tuple(reversed(dims)), ggml_type, offset))
    alignment = metadata.get("general.alignment") or _DEFAULT_ALIGNMENT
    if not isinstance(alignment, int) or alignment < 1:
        raise ValueError(f"general.alignment is {alignment!r}")
    data_start = -(-cursor.position // alignment) * alignment
    return GGUFFile(path, version, metadata, tensors, data_start)
