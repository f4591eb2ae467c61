"""Training a byte-level BPE tokenizer on a corpus (with the `tokenizers` library), and measuring it.

Byte-level BPE starts from the 256 byte values, so any text is encodable and nothing is ever
unknown; training merges the most frequent adjacent pair again and again until the vocabulary has
`vocab_size` entries. The result carries special tokens (`<|endoftext|>` ends a document,
`<|im_start|>`/`<|im_end|>` frame chat turns, `<|pad|>` pads) and the ChatML chat template, and is
saved in the Hugging Face layout that `transformers.AutoTokenizer` loads.

Its quality is its compression: UTF-8 bytes per token on held-out documents (every 20th document
is held out of training). More bytes per token means shorter sequences, so more text per context
and per unit of compute; `vocab_study` shows what each step up in vocabulary size buys.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lmstack import registry
from lmstack.data.io import dataset_reference
from lmstack.errors import LmstackError
from lmstack.home import atomic_path, check_output
from lmstack.pretrain.corpus import CorpusStats, corpus_files, documents
from lmstack.tokenizer import Tokenizer

END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = [END_OF_TEXT, "<|im_start|>", "<|im_end|>", "<|pad|>"]
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # the byte alphabet and the special tokens
MAX_VOCAB_SIZE = 1_000_000
HELD_OUT_EVERY = 20  # document i is held out when i % 20 == 0


def parse_vocab_sizes(text: str) -> list[int]:
    """`"1k,4k,16000"` -> [1000, 4000, 16000] (k = 1000), each checked against the byte alphabet."""
    sizes = []
    for part in text.replace(" ", "").split(","):
        try:
            size = int(float(part[:-1]) * 1000) if part.lower().endswith("k") else int(part)
        except ValueError:
            raise LmstackError(f"vocab size {part!r} is not a number; write e.g. 4000, 4k or 1k,4k,16k") from None
        if not MIN_VOCAB_SIZE <= size <= MAX_VOCAB_SIZE:
            raise LmstackError(f"vocab size {size} is outside [{MIN_VOCAB_SIZE}, {MAX_VOCAB_SIZE}]: a byte-level "
                               f"vocabulary holds the 256 bytes and {len(SPECIAL_TOKENS)} special tokens at least")
        sizes.append(size)
    return sorted(set(sizes))


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `texts`, with the special tokens and ChatML template."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    special = {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT,
               "pad_token": "<|pad|>"}
    return Tokenizer(backend, special_tokens=special, add_bos_token=False, add_eos_token=False,
                     chat_template="chatml")


def bytes_per_token(tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    """Compression: UTF-8 bytes of `texts` divided by the tokens they encode to."""
    encodings = tokenizer.backend.encode_batch(list(texts), add_special_tokens=False)
    tokens = sum(len(e.ids) for e in encodings)
    return sum(len(t.encode()) for t in texts) / max(1, tokens)


@dataclass
class TokenizerResult:
    vocab_size: int
    path: str
    bytes_per_token: float
    held_out_documents: int
    held_out_bytes: int


def _split(paths: Sequence[str | os.PathLike]) -> tuple[Callable[[], Iterable[str]], list[str]]:
    """(a function giving a fresh stream of the training documents, the held-out documents)."""
    stats, held_out, training_documents = CorpusStats(), [], 0
    for i, text in enumerate(documents(paths, stats)):
        if text.strip() and i % HELD_OUT_EVERY == 0:
            held_out.append(text)
        training_documents += bool(text.strip() and i % HELD_OUT_EVERY)
    if not training_documents or not held_out:
        raise LmstackError(f"the corpus has too few documents ({stats.summary()}): every {HELD_OUT_EVERY}th "
                           "is held out to measure compression, so give at least 2 non-empty documents")

    def training() -> Iterable[str]:
        return (text for i, text in enumerate(documents(paths)) if i % HELD_OUT_EVERY and text.strip())

    return training, held_out


def train_tokenizer(corpus: Sequence[str | os.PathLike], out: str | os.PathLike, vocab_sizes: Sequence[int],
                    *, min_frequency: int = 2, overwrite: bool = False) -> list[TokenizerResult]:
    """Train one tokenizer per vocabulary size and record each in the registry.

    One size: `out` is the tokenizer directory (with `report.json`). Several: `out/vocab-N/` for
    each, plus `study.json`, `study.md` and `study.png` comparing their compression.
    """
    if not vocab_sizes:
        raise LmstackError("no vocabulary size given; pass --vocab-size N (or 1k,4k,16k for a study)")
    for size in vocab_sizes:
        parse_vocab_sizes(str(size))  # the range check, before any reading
    out = check_output(out, overwrite=overwrite)
    corpus_files(corpus)  # existence and types, before any work
    training, held_out = _split(corpus)
    results = []
    with atomic_path(out) as tmp:
        for size in vocab_sizes:
            directory = tmp if len(vocab_sizes) == 1 else tmp / f"vocab-{size}"
            tokenizer = train_bpe(training(), size, min_frequency=min_frequency)
            tokenizer.save(directory)
            final = out if len(vocab_sizes) == 1 else out / directory.name
            results.append(TokenizerResult(tokenizer.vocab_size, str(final), bytes_per_token(tokenizer, held_out),
                                           len(held_out), sum(len(t.encode()) for t in held_out)))
        if len(vocab_sizes) == 1:
            (tmp / "report.json").write_text(json.dumps(asdict(results[0]), indent=2))
        else:
            _write_study(tmp, results)
    datasets = [dataset_reference(str(p)) for p in corpus]
    for result in results:
        registry.record("tokenizer", result.path, name=Path(result.path).name, operation="tokenizer-train",
                        recipe={"vocab_size": result.vocab_size, "min_frequency": min_frequency,
                                "special_tokens": SPECIAL_TOKENS, "held_out_every": HELD_OUT_EVERY},
                        datasets=datasets, metadata={"bytes_per_token": result.bytes_per_token,
                                                     "held_out_documents": result.held_out_documents})
    return results


def study_table(results: Sequence[TokenizerResult]) -> str:
    """A Markdown table: vocabulary size, bytes per token, and tokens per held-out KB."""
    rows = ["| vocab size | bytes/token | tokens per KB | vs smallest |", "|---|---|---|---|"]
    base = results[0].bytes_per_token
    rows += [f"| {r.vocab_size} | {r.bytes_per_token:.3f} | {1000 / r.bytes_per_token:.1f} | "
             f"{r.bytes_per_token / base:.2f}x |" for r in results]
    return "\n".join(rows)


def _write_study(directory: Path, results: Sequence[TokenizerResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (directory / "study.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (directory / "study.md").write_text(study_table(results) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r.vocab_size for r in results], [r.bytes_per_token for r in results], "o-")
    ax.set_xscale("log")
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("bytes per token (held-out)")
    ax.set_title("BPE compression vs vocabulary size")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(directory / "study.png", dpi=100)
    plt.close(fig)
