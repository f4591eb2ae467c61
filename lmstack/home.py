"""Where lmstack keeps its files, and the one rule for every write: never leave half a file, and
never delete or replace what the user did not ask to replace.

- `lmstack_home()`: models, conversions, logs and the registry live here.
- `atomic_path(final)`: write into a temporary sibling; it becomes `final` only when complete.
- `check_output(path, overwrite=...)`: what every command that writes a user-named output calls
  first; an existing file or non-empty directory is refused unless the user said `--overwrite`.
- `remove_stale_temporaries(folder)`: temporaries of a killed run are removed on the next start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from lmstack.errors import LmstackError

# Temporaries are named `.<final name>.<random>.<pid>.tmp`: the pid tells a live writer from a dead one.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")


def lmstack_home() -> Path:
    """The lmstack home: `$LMSTACK_HOME`, else `~/.cache/lmstack`. Created on first use."""
    home = Path(os.environ.get("LMSTACK_HOME") or Path.home() / ".cache" / "lmstack")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LmstackError(f"cannot create the lmstack home {home} ({error.strerror}); "
                           "set LMSTACK_HOME to a writable folder") from None
    return home


def check_output(path: str | os.PathLike, *, overwrite: bool = False, directory: bool = True,
                 flag: str = "--overwrite") -> Path:
    """Check that `path` may be written; raise LmstackError saying why not and what to do.

    `directory` says whether the output is a folder (True) or a file (False). An existing file,
    or a non-empty folder, is kept unless `overwrite`; a file where a folder is expected (or the
    reverse) is always refused; the parent must be a writable folder.
    """
    path = Path(path).expanduser()
    if path.exists():
        if directory and not path.is_dir():
            raise LmstackError(f"{path} is a file, but the output is a folder; give a folder path")
        if not directory and path.is_dir():
            raise LmstackError(f"{path} is a folder, but the output is a file; give a file path")
        if not overwrite and (not directory or any(path.iterdir())):
            what = "folder is not empty" if directory else "file exists"
            raise LmstackError(f"{path}: the {what}; pass {flag} to replace it, or choose another path")
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise LmstackError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LmstackError(f"cannot write {path}: {parent} is not writable; choose another path")
    return path


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it becomes `final` only if the block succeeds.

    Works for a file or a directory written at the yielded path. An existing `final` is replaced
    only at the very end (callers decide beforehand, with `check_output`, whether it may be), so a
    crash or Ctrl-C leaves the previous version (or nothing) in place.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=f".{os.getpid()}.tmp", dir=final.parent))
    except OSError as error:
        raise LmstackError(f"cannot write {final} ({error.strerror}); choose a writable location") from None
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old.{os.getpid()}.tmp")
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


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in `folder` whose writing process is gone (killed mid-write)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and not _alive(int(match.group(1))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
