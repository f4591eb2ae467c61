"""The hostile-input harness: run the real `lmstack` command as a new user would, with bad input,
and check the contract every command keeps.

    result = run(["data", "convert", str(bad), str(out), "--to", "messages"], home=home)
    refused(result, "not valid UTF-8")          # exit 1, one `error:` line naming the problem
    with untouched(tmp_path / "keep"):           # the user's files are byte-for-byte the same after
        ...

Each stage adds `test_<stage>.py` beside this file with its own cases (`from harness import ...`);
the `home` fixture (conftest.py) gives each case a fresh lmstack home that shares the test models.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


# Caches a fresh home shares with the test session's home, so models and embedders load once.
SHARED_CACHES = ("models", "converted", "embedders")


def fresh_home(folder: Path) -> Path:
    """An empty lmstack home at `folder` whose caches are the shared test caches."""
    shared = Path(os.environ["LMSTACK_HOME"])
    folder.mkdir(parents=True, exist_ok=True)
    for cache in SHARED_CACHES:
        if (shared / cache).is_dir() and not (folder / cache).exists():
            (folder / cache).symlink_to(shared / cache, target_is_directory=True)
    return folder


def run(args: list[str | bytes], *, home: Path, stdin: str | bytes = "", closed_stdin: bool = False,
        timeout: float = 300, separate_process: bool = False) -> subprocess.CompletedProcess:
    """`lmstack ARGS` with its own lmstack home (and the shared test models).

    It runs `lmstack.cli.main` in this process (fast: no interpreter and torch start-up per case),
    exactly as the console script does; `separate_process` (implied by `closed_stdin` and by an
    argument given as raw bytes) runs the real command in a fresh process instead.
    """
    env = {"LMSTACK_HOME": str(home), "LMSTACK_REGISTRY": str(home / "registry.db")}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    if separate_process or closed_stdin or any(isinstance(a, bytes) for a in args):
        full_env = {**os.environ, **env, "PYTHONIOENCODING": "utf-8"}
        command = [sys.executable, "-m", "lmstack.cli", *args]
        if closed_stdin:  # `lmstack ... <&-`: file descriptor 0 is closed
            command = ["/bin/sh", "-c", 'exec "$@" <&-', "sh", *command]
        return subprocess.run(command, input=None if closed_stdin else data, capture_output=True, env=full_env,
                              timeout=timeout)
    return _run_here([str(a) for a in args], env, data)


def _run_here(args: list[str], env: dict[str, str], data: bytes) -> subprocess.CompletedProcess:
    from lmstack.cli import main

    out, err = io.BytesIO(), io.BytesIO()
    saved = (sys.argv, sys.stdin, sys.stdout, sys.stderr, {k: os.environ.get(k) for k in env})
    sys.argv = ["lmstack", *args]
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    os.environ.update(env)
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        captured = out.getvalue(), err.getvalue()  # before the wrappers go (closing them closes these)
        sys.argv, sys.stdin, sys.stdout, sys.stderr, previous = saved
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(args, code, *captured)


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
