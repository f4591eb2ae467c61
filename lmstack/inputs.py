"""The one way lmstack reads a file the user named: checked before any model loads.

Existence, type (file or folder), size and encoding are checked up front, and every failure is
an LmstackError that names the file and, for bad text, the line and byte offset to look at.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lmstack.errors import LmstackError


def _existing(path: str | os.PathLike, what: str) -> Path:
    text = str(path)
    if not text.strip():
        raise LmstackError(f"no {what} given; pass a path")
    path = Path(text).expanduser()
    if not path.exists():
        raise LmstackError(f"{what} not found: {path}; check the path")
    return path


def check_file(path: str | os.PathLike, what: str = "file", *, allow_empty: bool = False,
               suffixes: tuple[str, ...] = ()) -> Path:
    """The path of an existing, readable, non-empty regular file (a clear error otherwise)."""
    path = _existing(path, what)
    if path.is_dir():
        raise LmstackError(f"{path} is a folder; the {what} must be a file")
    if not path.is_file():
        raise LmstackError(f"{path} is not a regular file; the {what} must be a file")
    if not os.access(path, os.R_OK):
        raise LmstackError(f"{path} is not readable; check its permissions")
    if suffixes and path.suffix.lower() not in suffixes:
        raise LmstackError(f"{path}: unsupported {what} type '{path.suffix}'; use one of {', '.join(suffixes)}")
    if not allow_empty and path.stat().st_size == 0:
        raise LmstackError(f"{path} is empty; the {what} needs content")
    return path


def check_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """The path of an existing folder (a clear error otherwise)."""
    path = _existing(path, what)
    if not path.is_dir():
        raise LmstackError(f"{path} is a file; the {what} must be a folder")
    return path


def decode_utf8(data: bytes, source: str) -> str:
    """`data` as text; invalid UTF-8 or binary content is an error naming the line and byte offset."""
    if b"\x00" in data[:8192]:
        raise LmstackError(f"{source} looks binary (it has NUL bytes), not text; give a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LmstackError(f"{source} is not valid UTF-8: byte 0x{data[error.start]:02x} at offset {error.start} "
                           f"(line {line}); save it as UTF-8") from None


def read_text(path: str | os.PathLike, what: str = "text file", *, allow_empty: bool = False) -> str:
    """A checked UTF-8 text file's content (a UTF-8 byte-order mark is dropped)."""
    path = check_file(path, what, allow_empty=allow_empty)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise LmstackError(f"cannot read {path} ({error.strerror})") from None
    return decode_utf8(data, str(path)).removeprefix("\ufeff")


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object (a config, a tokenizer setting); clear errors otherwise."""
    import json

    try:
        value = json.loads(decode_utf8(path.read_bytes(), str(path)))
    except json.JSONDecodeError as error:
        raise LmstackError(f"{path} is not valid JSON ({error}); fix or re-create the file") from None
    if not isinstance(value, dict):
        raise LmstackError(f"{path} must hold a JSON object, not {type(value).__name__}; fix or re-create the file")
    return value


def read_stdin(what: str = "input") -> str:
    """Standard input as text; closed, a terminal with nothing typed, or bad UTF-8 is a clear error."""
    stream = sys.stdin
    if stream is None or stream.closed:
        raise LmstackError(f"no {what}: standard input is closed; pass the {what} as an argument")
    try:
        data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode("utf-8")
    except (OSError, ValueError) as error:
        raise LmstackError(f"cannot read the {what} from standard input ({error}); pass it as an argument") from None
    return decode_utf8(data, "standard input")


def check_text(value: str, what: str) -> str:
    """A string from the command line that survived decoding (surrogates mark undecodable bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise LmstackError(f"the {what} is not valid UTF-8 (character {error.start}); pass UTF-8 text") from None
    return value
