"""Write a safetensors file one tensor at a time, so a merge never holds the whole output.

The safetensors layout is an 8-byte little-endian header length, a JSON header giving each
tensor's dtype, shape and byte range, then the raw bytes in that order. A merge knows every output
tensor's name, shape and dtype before computing any of them, so the header is written first and
each tensor's bytes are appended as soon as it is computed. (The safetensors library writes only
from a complete dict of tensors; it reads these files back like any other.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


class StreamingSafetensors:
    """`write` the tensors in the order they were declared; `close` checks that none is missing."""

    def __init__(self, path: Path, layout: list[tuple[str, tuple[int, ...], torch.dtype]]):
        header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, dtype in layout:
            size = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
        self._expected = [(name, tuple(shape), dtype) for name, shape, dtype in layout]
        self._written = 0
        self._file = open(path, "wb")
        self._file.write(len(encoded).to_bytes(8, "little") + encoded)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self._expected[self._written]
        actual = (name, tuple(tensor.shape), tensor.dtype)
        if actual != expected:
            raise RuntimeError(f"tensor {actual} written where {expected} was declared")
        data = tensor.detach().to("cpu").contiguous()
        self._file.write(data.reshape(-1).view(torch.uint8).numpy().data)
        self._written += 1

    def close(self) -> None:
        self._file.close()
        if self._written != len(self._expected):
            raise RuntimeError(f"{len(self._expected) - self._written} declared tensors were never written")

    def __enter__(self) -> "StreamingSafetensors":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self._file.close()
            return
        self.close()
