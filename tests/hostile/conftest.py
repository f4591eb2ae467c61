"""The hostile-input harness: run the real `lmstack` command as a new user would, with bad input,
and check the contract every command keeps.

    result = run(["data", "convert", str(bad), str(out), "--to", "messages"], home=tmp_path)
    refused(result, "not valid UTF-8")          # exit 1, one `error:` line naming the problem
    with untouched(tmp_path / "keep"):           # the user's files are byte-for-byte the same after
        ...

Each stage adds `test_<stage>.py` here with its own cases; `refused` is the one assertion.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def run(args: list[str], *, home: Path, stdin: str | bytes | None = "", closed_stdin: bool = False,
        timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`lmstack ARGS` in a fresh process with its own lmstack home (and the shared test models)."""
    env = {**os.environ, "LMSTACK_HOME": str(home), "LMSTACK_REGISTRY": str(home / "registry.db"),
           "PYTHONIOENCODING": "utf-8"}
    env.pop("LMSTACK_TEST_HOME", None)
    command = [sys.executable, "-m", "lmstack.cli", *args]
    if closed_stdin:  # `lmstack ... <&-`: file descriptor 0 is closed
        return subprocess.run(["/bin/sh", "-c", 'exec "$@" <&-', "sh", *command], capture_output=True, env=env,
                              timeout=timeout, cwd=cwd)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(command, input=data, capture_output=True, env=env, timeout=timeout, cwd=cwd)


def refused(result: subprocess.CompletedProcess, *expected: str, exit_code: int | None = 1) -> str:
    """Assert a clean refusal: the exit code, no traceback, no crash log, and a last line saying why."""
    stderr = result.stderr.decode("utf-8", errors="replace")
    assert "Traceback" not in stderr, stderr
    assert "this is a bug in lmstack" not in stderr, stderr
    if exit_code is None:
        assert result.returncode != 0, stderr
    else:
        assert result.returncode == exit_code, f"exit {result.returncode}: {stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "no message on stderr"
    message = lines[-1] if exit_code == 1 else stderr
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    return message


def usage_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """A command-line usage error (exit 2) from the argument parser, naming the option and range."""
    return refused(result, *expected, exit_code=2)


def _fingerprint(root: Path) -> dict[str, str]:
    if root.is_file():
        return {"": hashlib.sha256(root.read_bytes()).hexdigest()}
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@contextmanager
def untouched(*paths: Path) -> Iterator[None]:
    """Every file and folder under `paths` is the same after the block as before it."""
    before = {str(p): _fingerprint(p) for p in paths}
    yield
    after = {str(p): _fingerprint(p) for p in paths}
    assert after == before, f"user files changed: {before} -> {after}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh lmstack home whose model cache is the shared test cache (models are pulled once)."""
    shared = Path(os.environ["LMSTACK_HOME"])
    fresh = tmp_path / "home"
    fresh.mkdir()
    for folder in ("models", "converted"):
        if (shared / folder).is_dir():
            (fresh / folder).symlink_to(shared / folder, target_is_directory=True)
    return fresh
