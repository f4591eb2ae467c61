"""Where lmstack keeps its files, and how it writes them without ever leaving half a file behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def lmstack_home() -> Path:
    """The lmstack home: `$LMSTACK_HOME`, else `~/.cache/lmstack`. Created on first use."""
    home = Path(os.environ.get("LMSTACK_HOME") or Path.home() / ".cache" / "lmstack")
    home.mkdir(parents=True, exist_ok=True)
    return home


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it becomes `final` only if the block succeeds.

    Works for a file or a directory written at the yielded path. An existing `final` is replaced
    only at the very end, so a crash or Ctrl-C leaves the previous version (or nothing) in place.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            target.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
